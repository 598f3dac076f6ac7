// The overview: totals, live message rates (from the counters in /api/overview, sampled
// every 2 s in the browser), disk and memory.

import { api, h, card, fmtNum, fmtBytes, fmtRate, lineChart, errorBox } from './api.js';

const POINTS = 60;
const history = { at: null, counts: null, in: [], out: [] };

function sampleRates(stats) {
  const now = Date.now();
  const counts = [stats.publish || 0, stats.deliver_get || 0];
  if (history.counts) {
    const secs = Math.max(0.001, (now - history.at) / 1000);
    history.in.push(Math.max(0, counts[0] - history.counts[0]) / secs);
    history.out.push(Math.max(0, counts[1] - history.counts[1]) / secs);
    history.in = history.in.slice(-POINTS);
    history.out = history.out.slice(-POINTS);
  }
  history.at = now;
  history.counts = counts;
}

export async function overview(main, ctx) {
  const o = await api('/api/overview');
  sampleRates(o.message_stats || {});
  let node = null;
  if (ctx.monitor) {
    try { node = (await api('/api/nodes'))[0]; } catch (e) { node = null; }
  }
  const totals = o.object_totals || {};
  const last = a => (a.length ? a[a.length - 1] : 0);
  main.replaceChildren(
    h('h1', {}, 'Overview'),
    h('div', { class: 'cards' },
      card('Streams', fmtNum(totals.queues)),
      card('Super streams', fmtNum(totals.exchanges)),
      card('Connections', fmtNum(totals.connections)),
      card('Consumers', fmtNum(totals.consumers)),
      card('Messages', fmtNum((o.queue_totals || {}).messages)),
      card('In', fmtRate(last(history.in))),
      card('Out', fmtRate(last(history.out))),
      node ? card('Disk free', fmtBytes(node.disk_free)) : null,
      node ? card('Memory', fmtBytes(node.mem_used)) : null,
    ),
    h('h2', {}, 'Message rates'),
    h('div', { class: 'chart', id: 'rates' },
      h('div', { class: 'legend' },
        h('span', { class: 'in' }, '— published'), h('span', { class: 'out' }, '— delivered'),
        h('span', { class: 'muted' },
          `scale: 0 – ${fmtRate(Math.max(1, ...history.in, ...history.out))}, last ${POINTS * 2} s`)),
      lineChart([{ cls: 'in', points: history.in }, { cls: 'out', points: history.out }])),
    h('p', { class: 'muted' },
      `${o.product_name} ${o.product_version}, RabbitMQ streams protocol ${o.rabbitmq_version}, node ${o.cluster_name}`),
  );
}

export function overviewError(main, e) {
  main.replaceChildren(h('h1', {}, 'Overview'), errorBox(e));
}
