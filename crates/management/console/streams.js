// Streams: the list with create and delete, one stream's page (publishers, consumers, named
// consumers with their lag and a reset), and the message browser.

import { api, h, enc, table, card, fmtNum, fmtBytes, fmtTime, errorBox } from './api.js';

const link = (href, text) => h('a', { href }, text);
const streamHref = q => `#/stream/${enc(q.vhost)}/${enc(q.name)}`;

function retention(args) {
  const parts = [];
  if (args['x-max-age']) parts.push(`max age ${args['x-max-age']}`);
  if (args['x-max-length-bytes']) parts.push(`max ${fmtBytes(args['x-max-length-bytes'])}`);
  return parts.join(', ') || 'none';
}

export async function streams(main, ctx) {
  const list = await api('/api/queues');
  const status = h('p', { class: 'error' });
  const name = h('input', { placeholder: 'name', required: true, id: 'new-stream' });
  const vhost = h('input', { placeholder: 'vhost', value: '/' });
  const age = h('input', { placeholder: 'max age (7D, 12h)', size: 16 });
  const size = h('input', { placeholder: 'max bytes', size: 12 });
  const create = async ev => {
    ev.preventDefault();
    const args = { 'x-queue-type': 'stream' };
    if (age.value) args['x-max-age'] = age.value;
    if (size.value) args['x-max-length-bytes'] = Number(size.value);
    try {
      await api(`/api/queues/${enc(vhost.value)}/${enc(name.value)}`,
        { method: 'PUT', body: { durable: true, arguments: args } });
      ctx.refresh();
    } catch (e) { status.textContent = e.message; }
  };
  const remove = q => async () => {
    if (!confirm(`Delete stream ${q.name} and all its messages?`)) return;
    try { await api(`/api/queues/${enc(q.vhost)}/${enc(q.name)}`, { method: 'DELETE' }); ctx.refresh(); }
    catch (e) { status.textContent = e.message; }
  };
  main.replaceChildren(
    h('h1', {}, 'Streams'),
    table([
      { title: 'Virtual host', value: q => q.vhost },
      { title: 'Name', value: q => link(streamHref(q), q.name) },
      { title: 'State', value: q => q.state },
      { title: 'Messages', value: q => fmtNum(q.messages), num: true },
      { title: 'Size', value: q => fmtBytes((q.brook || {}).bytes), num: true },
      { title: 'Segments', value: q => fmtNum((q.brook || {}).segments), num: true },
      { title: 'Consumers', value: q => fmtNum(q.consumers), num: true },
      { title: 'Retention', value: q => retention(q.arguments || {}) },
      { title: '', value: q => h('button', { class: 'danger', onclick: remove(q) }, 'Delete') },
    ], list, 'No streams yet.'),
    h('h2', {}, 'Create a stream'),
    h('form', { class: 'inline', onsubmit: create }, vhost, name, age, size,
      h('button', { class: 'primary', type: 'submit' }, 'Create')),
    status,
  );
}

export async function stream(main, ctx, vhost, name) {
  const path = `${enc(vhost)}/${enc(name)}`;
  const [q, publishers, consumers, tracking] = await Promise.all([
    api(`/api/queues/${path}`),
    api(`/api/stream/publishers/${path}`),
    api(`/api/stream/consumers/${path}`),
    api(`/api/stream/tracking/${path}`),
  ]);
  const b = q.brook || {};
  const status = h('p', { class: 'error' });
  const reset = ref => async ev => {
    ev.preventDefault();
    const to = ev.target.elements.to.value;
    const body = /^\d+$/.test(to) ? { offset: Number(to) }
      : /^\d{4}-/.test(to) ? { timestamp: Date.parse(to) } : { offset: to };
    try {
      await api(`/api/stream/tracking/${path}/${enc(ref)}`, { method: 'PUT', body });
      ctx.refresh();
    } catch (e) { status.textContent = e.message; }
  };
  const named = tracking.filter(t => t.type === 'offset');
  main.replaceChildren(
    h('h1', {}, `Stream ${name}`, vhost === '/' ? '' : ` in ${vhost}`),
    h('div', { class: 'cards' },
      card('Messages', fmtNum(q.messages)),
      card('Size', fmtBytes(b.bytes)),
      card('Segments', fmtNum(b.segments)),
      card('First offset', fmtNum(b.first_offset)),
      card('Committed offset', fmtNum(b.committed_offset)),
      card('Retention', retention(q.arguments || {}))),
    h('p', {}, link(`#/browse/${path}`, 'Browse messages →')),
    h('h2', {}, 'Publishers'),
    table([
      { title: 'Reference', value: p => p.reference },
      { title: 'Connection', value: p => p.connection_details.name },
      { title: 'Published', value: p => fmtNum(p.published), num: true },
      { title: 'Confirmed', value: p => fmtNum(p.confirmed), num: true },
      { title: 'Errored', value: p => fmtNum(p.errored), num: true },
    ], publishers),
    h('h2', {}, 'Consumers'),
    table([
      { title: 'Subscription', value: c => c.subscription_id },
      { title: 'Name', value: c => (c.properties || {}).name || '' },
      { title: 'Connection', value: c => c.connection_details.name },
      { title: 'Consumed', value: c => fmtNum(c.consumed), num: true },
      { title: 'Offset', value: c => fmtNum(c.offset), num: true },
      { title: 'Lag', value: c => fmtNum(c.offset_lag), num: true },
      { title: 'Credits', value: c => fmtNum(c.credits), num: true },
      { title: 'Active', value: c => (c.active ? 'yes' : 'waiting') },
    ], consumers),
    h('h2', {}, 'Named consumers (stored offsets)'),
    table([
      { title: 'Reference', value: t => t.name },
      { title: 'Stored offset', value: t => fmtNum(t.tracking_value), num: true },
      { title: 'Lag', value: t => h('span', { class: 'lag', 'data-reference': t.name }, fmtNum(t.lag)), num: true },
      { title: 'Reset offset', value: t => h('form', { class: 'inline reset', onsubmit: reset(t.name) },
        h('input', { name: 'to', value: 'first', size: 22, title: 'first, last, next, an offset or a date (2026-12-01T10:00:00Z)' }),
        h('button', { type: 'submit' }, 'Reset')) },
    ], named, 'No stored offsets.'),
    status,
  );
}

function bodyView(body) {
  const views = [];
  if (body.json !== undefined) views.push(['JSON', JSON.stringify(body.json, null, 2)]);
  if (body.text !== undefined) views.push(['Text', body.text]);
  views.push(['Hex', (body.hex || '').replace(/(..)/g, '$1 ').trim()]);
  const pre = h('pre', { class: 'body' }, views[0][1]);
  const buttons = views.map(([label, text], i) => h('button', {
    class: i === 0 ? 'on' : null,
    onclick: ev => {
      pre.textContent = text;
      for (const b of buttons) b.classList.remove('on');
      ev.target.classList.add('on');
    },
  }, label));
  return h('div', {}, h('div', { class: 'tabs' }, buttons), pre);
}

function messageView(m) {
  const props = m.properties || {};
  const json = v => JSON.stringify(v, null, 2);
  return h('details', { class: 'message', 'data-offset': m.offset },
    h('summary', {}, `offset ${m.offset} · ${fmtTime(m.timestamp)} · ${fmtNum(m.size)} B`,
      props.content_type ? ` · ${props.content_type}` : '', m.format !== 'amqp-1.0' ? ` · ${m.format}` : ''),
    m.properties ? [h('div', { class: 'muted' }, 'Properties'), h('pre', {}, json(m.properties))] : null,
    m.application_properties ? [h('div', { class: 'muted' }, 'Application properties'),
      h('pre', {}, json(m.application_properties))] : null,
    m.message_annotations ? [h('div', { class: 'muted' }, 'Message annotations'),
      h('pre', {}, json(m.message_annotations))] : null,
    h('div', { class: 'muted' }, 'Body'),
    m.body.value !== undefined ? h('pre', { class: 'body' }, json(m.body.value)) : bodyView(m.body));
}

export async function browse(main, ctx, vhost, name, params) {
  const path = `${enc(vhost)}/${enc(name)}`;
  const from = params.get('from') || 'first';
  const limit = Number(params.get('limit') || 20);
  const query = /^\d{4}-/.test(from) ? `timestamp=${Date.parse(from)}` : `offset=${enc(from)}`;
  let page;
  try { page = await api(`/api/stream/messages/${path}?${query}&limit=${limit}`); }
  catch (e) { main.replaceChildren(h('h1', {}, `Messages of ${name}`), errorBox(e)); return; }
  const go = ev => {
    ev.preventDefault();
    location.hash = `#/browse/${path}?from=${enc(ev.target.elements.from.value)}&limit=${limit}`;
  };
  const first = page.messages.length ? page.messages[0].offset : null;
  main.replaceChildren(
    h('h1', {}, 'Messages of ', h('a', { href: `#/stream/${path}` }, name)),
    h('form', { class: 'inline', onsubmit: go },
      'From', h('input', { name: 'from', value: from, size: 26, title: 'first, last, next, an offset, or a date' }),
      h('button', { type: 'submit', class: 'primary' }, 'Read')),
    h('div', { id: 'messages' },
      page.messages.length ? page.messages.map(messageView) : h('p', { class: 'muted' }, 'No messages here.')),
    h('p', {},
      first !== null && first > 0
        ? h('a', { href: `#/browse/${path}?from=${Math.max(0, first - limit)}&limit=${limit}` }, '← previous') : null,
      ' ',
      h('a', { href: `#/browse/${path}?from=${page.next_offset}&limit=${limit}`, id: 'next-page' }, 'next →')),
  );
}
