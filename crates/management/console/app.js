// brook's console: a small single-page app over the management API, served by brook itself
// and logged in with the browser's HTTP Basic authentication. Hash routes:
//   #/  #/streams  #/stream/V/S  #/browse/V/S?from=…  #/connections  #/super-streams  #/admin

import { api, h, errorBox } from './api.js';
import { overview } from './overview.js';
import { streams, stream, browse } from './streams.js';
import { connections, superStreams, admin } from './admin.js';

const main = document.getElementById('main');
const REFRESH_MS = 2000;
let timer = null;
let me = null;

// Pages that show live state are redrawn every 2 s; forms and the browser are not.
const routes = [
  { re: /^\/?$/, page: overview, live: true, nav: 'Overview' },
  { re: /^\/streams$/, page: streams, live: false, nav: 'Streams' },
  { re: /^\/stream\/([^/]+)\/([^/?]+)$/, page: stream, live: false },
  { re: /^\/browse\/([^/]+)\/([^/?]+)$/, page: browse, live: false, query: true },
  { re: /^\/super-streams$/, page: superStreams, live: false, nav: 'Super streams' },
  { re: /^\/connections$/, page: connections, live: false, nav: 'Connections' },
  { re: /^\/admin$/, page: admin, live: false, nav: 'Admin', admin: true },
];

function navigation(current) {
  const links = routes.filter(r => r.nav && (!r.admin || me.admin)).map(r => {
    const href = r.nav === 'Overview' ? '#/' : `#/${r.nav.toLowerCase().replace(' ', '-')}`;
    return h('a', { href, class: r === current ? 'active' : null }, r.nav);
  });
  document.getElementById('nav').replaceChildren(...links);
}

async function render() {
  clearTimeout(timer);
  const [path, query = ''] = location.hash.slice(1).split('?');
  const route = routes.find(r => r.re.test(path)) || routes[0];
  navigation(route);
  const args = (path.match(route.re) || []).slice(1).map(decodeURIComponent);
  if (route.query) args.push(new URLSearchParams(query));
  const ctx = { admin: me.admin, monitor: me.monitor, refresh: render };
  try {
    await route.page(main, ctx, ...args);
  } catch (e) {
    main.replaceChildren(errorBox(e));
  }
  if (route.live) timer = setTimeout(render, REFRESH_MS);
}

async function start() {
  try {
    const who = await api('/api/whoami');
    me = { ...who, admin: who.tags.includes('administrator'),
      monitor: who.tags.includes('administrator') || who.tags.includes('monitoring') };
    document.getElementById('who').textContent = who.name;
  } catch (e) {
    main.replaceChildren(errorBox(e));
    return;
  }
  window.addEventListener('hashchange', render);
  render();
}

start();
