// Connections (with close), super streams with their partitions, and for administrators
// vhosts and users.

import { api, h, enc, table, fmtNum, fmtTime } from './api.js';

export async function connections(main, ctx) {
  const list = await api('/api/connections');
  const status = h('p', { class: 'error' });
  const close = c => async () => {
    if (!confirm(`Close ${c.name}?`)) return;
    try {
      await api(`/api/connections/${enc(c.name)}`,
        { method: 'DELETE', headers: { 'x-reason': 'Closed from the brook console' } });
      ctx.refresh();
    } catch (e) { status.textContent = e.message; }
  };
  main.replaceChildren(
    h('h1', {}, 'Connections'),
    table([
      { title: 'Name', value: c => c.name },
      { title: 'Client', value: c => c.user_provided_name || (c.client_properties || {}).product || '' },
      { title: 'User', value: c => c.user || '' },
      { title: 'Virtual host', value: c => c.vhost || '' },
      { title: 'TLS', value: c => (c.ssl ? 'yes' : '') },
      { title: 'Connected', value: c => fmtTime(c.connected_at) },
      { title: '', value: c => h('button', { class: 'danger', onclick: close(c) }, 'Close') },
    ], list, 'No connections.'),
    status,
  );
}

export async function superStreams(main) {
  const exchanges = await api('/api/exchanges');
  const rows = await Promise.all(exchanges.map(async x => ({
    ...x,
    bindings: await api(`/api/exchanges/${enc(x.vhost)}/${enc(x.name)}/bindings/source`),
  })));
  main.replaceChildren(
    h('h1', {}, 'Super streams'),
    table([
      { title: 'Virtual host', value: x => x.vhost },
      { title: 'Name', value: x => x.name },
      { title: 'Partitions', value: x => x.bindings.map((b, i) => [i ? ', ' : '',
        h('a', { href: `#/stream/${enc(b.vhost)}/${enc(b.destination)}` }, b.destination),
        ` (key ${b.routing_key})`]) },
    ], rows, 'No super streams.'),
  );
}

export async function admin(main, ctx) {
  const [vhosts, users, permissions] = await Promise.all([
    api('/api/vhosts'), api('/api/users'), api('/api/permissions')]);
  const status = h('p', { class: 'error' });
  const act = fn => async ev => {
    ev.preventDefault();
    try { await fn(ev); ctx.refresh(); } catch (e) { status.textContent = e.message; }
  };
  main.replaceChildren(
    h('h1', {}, 'Administration'),
    h('h2', {}, 'Virtual hosts'),
    table([
      { title: 'Name', value: v => v.name },
      { title: 'Description', value: v => v.description },
      { title: 'Messages', value: v => fmtNum(v.messages), num: true },
      { title: '', value: v => h('button', { class: 'danger', onclick: act(async () => {
        if (confirm(`Delete vhost ${v.name} with all its streams?`)) {
          await api(`/api/vhosts/${enc(v.name)}`, { method: 'DELETE' });
        }
      }) }, 'Delete') },
    ], vhosts),
    h('form', { class: 'inline', onsubmit: act(ev =>
      api(`/api/vhosts/${enc(ev.target.elements.name.value)}`, { method: 'PUT', body: {} })) },
    h('input', { name: 'name', placeholder: 'new vhost', required: true }),
    h('button', { type: 'submit' }, 'Add vhost')),
    h('h2', {}, 'Users'),
    table([
      { title: 'Name', value: u => u.name },
      { title: 'Tags', value: u => u.tags.join(', ') },
      { title: 'Permissions', value: u => permissions.filter(p => p.user === u.name)
        .map(p => `${p.vhost}: ${p.configure} / ${p.write} / ${p.read}`).join('; ') },
      { title: '', value: u => h('button', { class: 'danger', onclick: act(async () => {
        if (confirm(`Delete user ${u.name}?`)) await api(`/api/users/${enc(u.name)}`, { method: 'DELETE' });
      }) }, 'Delete') },
    ], users),
    h('form', { class: 'inline', onsubmit: act(ev => {
      const f = ev.target.elements;
      return api(`/api/users/${enc(f.name.value)}`,
        { method: 'PUT', body: { password: f.password.value, tags: f.tags.value } });
    }) },
    h('input', { name: 'name', placeholder: 'user', required: true }),
    h('input', { name: 'password', type: 'password', placeholder: 'password', required: true }),
    h('input', { name: 'tags', placeholder: 'tags (management, …)' }),
    h('button', { type: 'submit' }, 'Add user')),
    h('form', { class: 'inline', onsubmit: act(ev => {
      const f = ev.target.elements;
      return api(`/api/permissions/${enc(f.vhost.value)}/${enc(f.user.value)}`,
        { method: 'PUT', body: { configure: f.configure.value, write: f.write.value, read: f.read.value } });
    }) },
    h('input', { name: 'user', placeholder: 'user', required: true }),
    h('input', { name: 'vhost', placeholder: 'vhost', value: '/' }),
    h('input', { name: 'configure', value: '.*', size: 8 }),
    h('input', { name: 'write', value: '.*', size: 8 }),
    h('input', { name: 'read', value: '.*', size: 8 }),
    h('button', { type: 'submit' }, 'Set permissions')),
    status,
  );
}
