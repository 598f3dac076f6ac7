// Drives brook's web console in headless Chromium. Usage:
//   node console.mjs STREAM_PORT HTTP_PORT SCREENSHOT_DIR CHROMIUM_PATH
import { chromium } from 'playwright-core';
import rabbit from 'rabbitmq-stream-js-client';

const [streamPort, httpPort, shots, executablePath] = process.argv.slice(2);
const base = `http://127.0.0.1:${httpPort}`;
const auth = { authorization: `Basic ${Buffer.from('guest:guest').toString('base64')}` };

function check(cond, what) {
  if (!cond) throw new Error(`FAILED: ${what}`);
  console.log(`ok - ${what}`);
}

async function api(path, init = {}) {
  const r = await fetch(base + path, { ...init, headers: { ...auth, ...(init.headers || {}) } });
  const text = await r.text();
  if (!r.ok) throw new Error(`${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// A stream of 10 JSON orders from a named publisher, and a named consumer that stored
// offset 3 and went away.
async function seed() {
  await api('/api/queues/%2F/orders', {
    method: 'PUT',
    body: JSON.stringify({ durable: true, arguments: { 'x-queue-type': 'stream', 'x-max-age': '7D' } }),
  });
  const client = await rabbit.connect({
    hostname: '127.0.0.1', port: Number(streamPort), username: 'guest', password: 'guest', vhost: '/',
  });
  const publisher = await client.declarePublisher({ stream: 'orders', publisherRef: 'shop' });
  let confirmed = 0;
  const done = new Promise((resolve) => publisher.on('publish_confirm', (err, ids) => {
    confirmed += ids.length;
    if (confirmed >= 10) resolve();
  }));
  for (let i = 0; i < 10; i++) {
    await publisher.send(Buffer.from(JSON.stringify({ order: i, item: 'book', qty: i + 1 })), {
      messageProperties: { contentType: 'application/json', messageId: `order-${i}` },
      applicationProperties: { region: 'eu' },
    });
  }
  await done;
  const stored = new Promise((resolve) => {
    const consumer = client.declareConsumer(
      { stream: 'orders', offset: rabbit.Offset.first(), consumerRef: 'billing' },
      async (message) => {
        if (message.offset === 3n) {
          await (await consumer).storeOffset(3n);
          resolve(consumer);
        }
      });
  });
  await (await stored).close(true);
  // The stored offset is in the stream once QueryOffset answers it.
  for (let i = 0; i < 100; i++) {
    const t = await api('/api/stream/tracking/%2F/orders/billing');
    if (t.length && t[0].tracking_value === 3) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await client.close();
}

// A publisher and a consumer on stream `clicks`, until stopped.
async function startTraffic() {
  const client = await rabbit.connect({
    hostname: '127.0.0.1', port: Number(streamPort), username: 'guest', password: 'guest', vhost: '/',
  });
  await client.createStream({ stream: 'clicks', arguments: {} });
  const publisher = await client.declarePublisher({ stream: 'clicks' });
  await client.declareConsumer({ stream: 'clicks', offset: rabbit.Offset.next() }, () => {});
  let n = 0;
  const timer = setInterval(() => {
    for (let i = 0; i < 20 + (n++ % 7) * 5; i++) publisher.send(Buffer.from(`click ${n}`));
  }, 200);
  return { stop: async () => { clearInterval(timer); await client.close(); } };
}

async function main() {
  await seed();
  const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
  // Without credentials the console asks for them (HTTP Basic: the browser's login dialog).
  const denied = await fetch(base + '/');
  check(denied.status === 401 && /^Basic/.test(denied.headers.get('www-authenticate')),
    'the console asks for a login');
  const context = await browser.newContext({
    httpCredentials: { username: 'guest', password: 'guest' },
    viewport: { width: 1280, height: 800 },
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => { throw new Error(`page error: ${e}`); });

  // Live traffic on another stream while the overview charts it.
  const traffic = await startTraffic();
  await page.goto(base + '/');
  await page.waitForSelector('.card');
  check((await page.textContent('#who')) === 'guest', 'logged in as guest');
  await page.waitForFunction(() => {
    const line = document.querySelector('.chart polyline.in, .chart polyline');
    return line && line.getAttribute('points').split(' ').length >= 4;
  }, null, { timeout: 20000 });
  await page.screenshot({ path: `${shots}/overview.png` });
  check(Number((await page.textContent('.card:has-text("In") .v')).replace(/[^0-9.]/g, '')) > 0,
    'the overview shows messages coming in');
  await traffic.stop();

  await page.click('nav >> text=Streams');
  await page.click('table >> text=orders');
  await page.waitForSelector('.lag');
  const lag = Number((await page.textContent('.lag[data-reference="billing"]')).replace(/,/g, ''));
  const committed = (await api('/api/queues/%2F/orders')).brook.committed_offset;
  check(lag === committed - 3, `named consumer billing lags ${lag} (committed ${committed} - 3)`);
  await page.screenshot({ path: `${shots}/stream.png`, fullPage: true });

  await page.click('text=Browse messages');
  await page.fill('input[name=from]', '5');
  await page.click('button:has-text("Read")');
  await page.waitForSelector('details.message').catch(async () => {
    throw new Error(`no messages shown: ${await page.textContent('main')}`);
  });
  const message = page.locator('details.message[data-offset="5"]');
  await message.locator('summary').click();
  const body = JSON.parse(await message.locator('pre.body').textContent());
  check(body.order === 5 && body.item === 'book', 'message 5 decoded as JSON');
  check((await message.textContent()).includes('order-5'), 'its properties (message id)');
  check((await message.textContent()).includes('"region": "eu"'), 'its application properties');
  await page.screenshot({ path: `${shots}/browse.png`, fullPage: true });

  await page.goBack();
  await page.goBack();
  await page.waitForSelector('form.reset');
  await page.fill('form.reset input[name=to]', 'next');
  await page.click('form.reset button');
  await page.waitForFunction(
    (before) => Number(document.querySelector('.lag').textContent.replace(/,/g, '')) < before, lag);
  const after = await api('/api/stream/tracking/%2F/orders/billing');
  check(after[0].tracking_value > 3, `reset moved billing to ${after[0].tracking_value}`);
  await page.screenshot({ path: `${shots}/reset.png`, fullPage: true });
  await browser.close();
}

main().then(() => process.exit(0)).catch((e) => { console.error(e); process.exit(1); });
