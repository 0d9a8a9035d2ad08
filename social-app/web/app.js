// The social-app page: vanilla JS over the JSON API (social-app/API.md), live through the
// hub with centrifuge-js. Every piece of user text goes into the DOM as text (textContent /
// createTextNode), never as markup.
(function () {
  'use strict';

  const PAGE = 20;
  const MESSAGES_PAGE = 30;
  const SEARCH_PAGE = 10;

  const state = {
    me: null,
    friends: new Map(), // id -> user
    incoming: new Map(), // id -> user
    outgoing: new Map(), // id -> user
    feed: [],
    feedIds: new Set(),
    feedDone: false,
    search: { q: '', next: null, users: [] },
    chats: [], // chat objects, as /api/chats gives them
    open: null, // {chat, messages: [], seqs: Set, first, last}
    client: null,
    sub: null,
  };

  const $ = (id) => document.getElementById(id);

  // ---------- small DOM helpers (text only) ----------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k === 'test') e.setAttribute('data-test', v);
        else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function fullName(u) {
    if (!u) return 'someone';
    const n = [u.first_name, u.last_name].filter(Boolean).join(' ');
    return n || 'someone';
  }

  function initials(u) {
    const a = (u && u.first_name ? u.first_name[0] : '') + (u && u.last_name ? u.last_name[0] : '');
    return (a || '?').toUpperCase();
  }

  function avatar(u) {
    // A colour picked from the id, through a class (no style attributes under the CSP).
    let h = 0;
    const id = (u && u.id) || '';
    for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0;
    return el('span', { class: 'avatar c' + (h % 8), 'aria-hidden': 'true', text: initials(u) });
  }

  function when(ms) {
    if (!ms) return '';
    const d = new Date(Number(ms));
    const now = new Date();
    const sameDay = d.toDateString() === now.toDateString();
    return sameDay
      ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
      : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  }

  let toastTimer = null;
  function toast(text, kind) {
    const t = $('toast');
    t.textContent = text;
    t.className = 'toast' + (kind ? ' ' + kind : '');
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
  }

  // ---------- API ----------

  function csrf() {
    for (const part of document.cookie.split(';')) {
      const [k, ...v] = part.trim().split('=');
      if (k === 'csrf') return decodeURIComponent(v.join('='));
    }
    return '';
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || ('HTTP ' + status));
      this.status = status;
      this.field = body && body.field;
    }
  }

  async function api(method, path, body) {
    const opts = { method, credentials: 'same-origin', headers: { accept: 'application/json' } };
    if (method !== 'GET') opts.headers['x-csrf-token'] = csrf();
    if (body !== undefined) {
      opts.headers['content-type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(path, opts);
    let data = null;
    try { data = await res.json(); } catch (_) { data = null; }
    if (!res.ok) {
      if (res.status === 401 && state.me && path !== '/api/login') signedOut();
      throw new ApiError(res.status, data);
    }
    return data || {};
  }

  function report(e) {
    console.error(e);
    toast(e && e.message ? e.message : String(e), 'bad');
  }

  // Runs an async action from a button, disabling it meanwhile.
  function action(btn, fn) {
    return async (ev) => {
      if (ev) ev.preventDefault();
      if (btn) btn.disabled = true;
      try { await fn(ev); } catch (e) { report(e); } finally { if (btn) btn.disabled = false; }
    };
  }

  // ---------- sign up, log in, log out ----------

  function showAuth() {
    $('auth').hidden = false;
    $('app').hidden = true;
    $('me-name').hidden = true;
    $('logout').hidden = true;
  }

  function showApp() {
    $('auth').hidden = true;
    $('app').hidden = false;
    $('me-name').textContent = fullName(state.me);
    $('me-name').hidden = false;
    $('logout').hidden = false;
  }

  function authError(text) {
    const p = $('auth-error');
    p.textContent = text || '';
    p.hidden = !text;
  }

  async function signedIn(user) {
    state.me = user;
    authError('');
    showApp();
    await Promise.all([loadRelations(), loadFeed(), loadChats()]).catch(report);
    connect();
  }

  function signedOut() {
    disconnect();
    state.me = null;
    state.friends.clear(); state.incoming.clear(); state.outgoing.clear();
    state.feed = []; state.feedIds.clear(); state.chats = []; state.open = null;
    state.search = { q: '', next: null, users: [] };
    for (const id of ['feed-list', 'chats-list', 'messages', 'search-results', 'requests-list', 'friends-list', 'outgoing-list']) clear($(id));
    $('chat-view').hidden = true;
    showAuth();
  }

  function onSignup(ev) {
    ev.preventDefault();
    const f = ev.target;
    const btn = f.querySelector('button[type=submit]');
    const body = {
      email: f.email.value.trim(),
      password: f.password.value,
      first_name: f.first_name.value.trim(),
      last_name: f.last_name.value.trim(),
      birthday: f.birthday.value,
      city: f.city.value.trim(),
      interests: f.interests.value.split(',').map((s) => s.trim()).filter(Boolean),
    };
    btn.disabled = true;
    api('POST', '/api/register', body)
      .then((r) => { f.reset(); return signedIn(r.user); })
      .catch((e) => authError('Sign up failed: ' + e.message))
      .finally(() => { btn.disabled = false; });
  }

  function onLogin(ev) {
    ev.preventDefault();
    const f = ev.target;
    const btn = f.querySelector('button[type=submit]');
    btn.disabled = true;
    api('POST', '/api/login', { email: f.email.value.trim(), password: f.password.value })
      .then((r) => { f.reset(); return signedIn(r.user); })
      .catch((e) => authError('Log in failed: ' + e.message))
      .finally(() => { btn.disabled = false; });
  }

  async function logout() {
    try { await api('POST', '/api/logout'); } catch (e) { report(e); }
    signedOut();
  }

  // ---------- live ----------

  function setLive(stateName, label) {
    const s = $('live-status');
    s.setAttribute('data-state', stateName);
    $('live-label').textContent = label;
  }

  async function realtimeInfo() {
    const res = await fetch('/api/realtime', { credentials: 'same-origin' });
    if (res.status === 401 || res.status === 403) throw new Centrifuge.UnauthorizedError('signed out');
    if (!res.ok) throw new Error('realtime: HTTP ' + res.status);
    return res.json();
  }

  async function connect() {
    disconnect();
    if (typeof Centrifuge === 'undefined') { setLive('offline', 'no live client'); return; }
    let info;
    try { info = await realtimeInfo(); } catch (e) { setLive('offline', 'offline'); report(e); return; }
    const url = info.url || ((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/connection/websocket');
    const client = new Centrifuge(url, {
      token: info.token,
      getToken: () => realtimeInfo().then((d) => d.token),
    });
    client.on('connecting', () => setLive('connecting', 'connecting…'));
    client.on('connected', () => setLive('connecting', 'subscribing…'));
    client.on('disconnected', () => setLive('offline', 'offline'));
    client.on('error', (ctx) => console.warn('live error', ctx));
    const sub = client.newSubscription(info.channel);
    sub.on('subscribing', () => setLive('connecting', 'connecting…'));
    sub.on('subscribed', () => {
      setLive('live', 'live');
      // Whatever happened while we were away: reload what is on screen.
      refreshAll();
    });
    sub.on('unsubscribed', () => setLive('offline', 'offline'));
    sub.on('publication', (ctx) => {
      try { onEvent(ctx.data || {}); } catch (e) { console.error(e); }
    });
    sub.subscribe();
    client.connect();
    state.client = client;
    state.sub = sub;
  }

  function disconnect() {
    if (state.sub) { try { state.sub.removeAllListeners(); state.sub.unsubscribe(); } catch (_) { /* gone */ } }
    if (state.client) { try { state.client.removeAllListeners(); state.client.disconnect(); } catch (_) { /* gone */ } }
    state.client = null;
    state.sub = null;
    setLive('offline', 'offline');
  }

  let refreshing = false;
  async function refreshAll() {
    if (refreshing || !state.me) return;
    refreshing = true;
    try {
      const jobs = [loadRelations(), loadFeed(), loadChats()];
      if (state.open) jobs.push(loadMessages(state.open.chat.id));
      await Promise.all(jobs);
    } catch (e) { report(e); } finally { refreshing = false; }
  }

  function onEvent(d) {
    switch (d.type) {
      case 'post': {
        if (!d.post) return;
        const author = d.author || state.friends.get(d.post.author) || { id: d.post.author };
        addPostOnTop({ id: d.post.id, author, text: d.post.text, created_at: d.post.created_at });
        break;
      }
      case 'message':
        onMessage(d.chat, d.message, d.unread);
        break;
      case 'unread':
        setUnread(d.chat, d.unread || 0);
        break;
      case 'chat':
        loadChats().catch(report);
        if (d.chat) toast('You were added to ' + (d.chat.title || 'a group chat'));
        break;
      case 'friend_request':
        if (d.from) {
          state.incoming.set(d.from.id, d.from);
          renderRelations();
          toast(fullName(d.from) + ' wants to be friends');
        }
        break;
      case 'friend':
        if (d.user) {
          state.friends.set(d.user.id, d.user);
          state.incoming.delete(d.user.id);
          state.outgoing.delete(d.user.id);
          renderRelations();
          toast('You and ' + fullName(d.user) + ' are now friends');
          loadFeed().catch(report); // their posts are in our feed now
        }
        break;
      case 'unfriend': {
        const id = typeof d.user === 'string' ? d.user : d.user && d.user.id;
        if (id) {
          state.friends.delete(id);
          state.incoming.delete(id);
          state.outgoing.delete(id);
          renderRelations();
          loadFeed().catch(report);
        }
        break;
      }
      default:
        break;
    }
  }

  // ---------- people: search, requests, friends ----------

  function relationOf(id) {
    if (state.me && id === state.me.id) return 'self';
    if (state.friends.has(id)) return 'friends';
    if (state.incoming.has(id)) return 'request_received';
    if (state.outgoing.has(id)) return 'request_sent';
    return 'none';
  }

  const RELATION_LABEL = {
    self: 'you',
    friends: 'friend',
    request_received: 'wants to be friends',
    request_sent: 'request sent',
    none: '',
  };

  // The relation after an action answered `relation` for user `u`.
  function applyRelation(u, relation) {
    state.friends.delete(u.id);
    state.incoming.delete(u.id);
    state.outgoing.delete(u.id);
    if (relation === 'friends') state.friends.set(u.id, u);
    else if (relation === 'request_received') state.incoming.set(u.id, u);
    else if (relation === 'request_sent') state.outgoing.set(u.id, u);
    renderRelations();
  }

  function relationButtons(u) {
    const rel = relationOf(u.id);
    const box = el('div', { class: 'actions' });
    const btn = (label, test, cls, fn) => {
      const b = el('button', { type: 'button', class: 'btn small ' + (cls || ''), test, text: label });
      b.addEventListener('click', action(b, fn));
      box.appendChild(b);
    };
    if (rel === 'none') {
      btn('Add friend', 'befriend', 'primary', async () => {
        const r = await api('POST', '/api/friends/' + encodeURIComponent(u.id));
        applyRelation(u, r.relation);
        if (r.relation === 'friends') loadFeed().catch(report);
      });
    } else if (rel === 'request_received') {
      btn('Approve', 'approve', 'primary', async () => {
        const r = await api('POST', '/api/friends/' + encodeURIComponent(u.id) + '/approve');
        applyRelation(u, r.relation);
        loadFeed().catch(report);
      });
      btn('Decline', 'decline', '', async () => {
        const r = await api('POST', '/api/friends/' + encodeURIComponent(u.id) + '/decline');
        applyRelation(u, r.relation);
      });
    } else if (rel === 'request_sent') {
      btn('Withdraw', 'withdraw', '', async () => {
        const r = await api('DELETE', '/api/friends/' + encodeURIComponent(u.id));
        applyRelation(u, r.relation);
      });
    } else if (rel === 'friends') {
      btn('Message', 'message', 'primary', () => openDialog(u));
      btn('Remove', 'remove', 'danger', async () => {
        if (!confirm('Remove ' + fullName(u) + ' from your friends?')) return;
        const r = await api('DELETE', '/api/friends/' + encodeURIComponent(u.id));
        applyRelation(u, r.relation);
        loadFeed().catch(report);
      });
    }
    return box;
  }

  function personRow(u, test) {
    const rel = relationOf(u.id);
    const sub = [u.city, (u.interests || []).join(', ')].filter(Boolean).join(' · ');
    return el('li', { class: 'person', test, 'data-user-id': u.id, 'data-relation': rel },
      avatar(u),
      el('div', { class: 'who' },
        el('div', { class: 'name', test: 'person-name', text: fullName(u) }),
        sub ? el('div', { class: 'muted small', text: sub }) : null,
        RELATION_LABEL[rel] ? el('div', { class: 'relation ' + rel, test: 'relation', text: RELATION_LABEL[rel] }) : null),
      relationButtons(u));
  }

  function renderSearch() {
    const ul = $('search-results');
    clear(ul);
    const { users, next, q } = state.search;
    for (const u of users) ul.appendChild(personRow(u, 'person'));
    if (q && users.length === 0) ul.appendChild(el('li', { class: 'muted small', text: 'Nobody found.' }));
    $('search-more').hidden = !next;
  }

  function renderRelations() {
    const req = $('requests-list');
    clear(req);
    for (const u of state.incoming.values()) req.appendChild(personRow(u, 'request'));
    $('requests-empty').hidden = state.incoming.size > 0;
    const count = $('requests-count');
    count.textContent = String(state.incoming.size);
    count.hidden = state.incoming.size === 0;

    const out = $('outgoing-list');
    clear(out);
    for (const u of state.outgoing.values()) out.appendChild(personRow(u, 'outgoing'));
    $('outgoing-wrap').hidden = state.outgoing.size === 0;

    const fr = $('friends-list');
    clear(fr);
    const friends = [...state.friends.values()].sort((a, b) => fullName(a).localeCompare(fullName(b)));
    for (const u of friends) fr.appendChild(personRow(u, 'friend'));
    $('friends-empty').hidden = friends.length > 0;

    renderGroupMembers(friends);
    renderSearch();
  }

  function renderGroupMembers(friends) {
    const ul = $('group-members');
    const checked = new Set([...ul.querySelectorAll('input:checked')].map((i) => i.value));
    clear(ul);
    if (friends.length === 0) ul.appendChild(el('li', { class: 'muted small', text: 'Befriend people to chat with them.' }));
    for (const u of friends) {
      ul.appendChild(el('li', null,
        el('label', { class: 'check' },
          el('input', { type: 'checkbox', value: u.id, test: 'group-member', checked: checked.has(u.id) }),
          fullName(u))));
    }
  }

  async function loadRelations() {
    const friends = new Map();
    let cursor = '';
    for (let page = 0; page < 20; page++) {
      const r = await api('GET', '/api/friends?limit=100&cursor=' + encodeURIComponent(cursor));
      for (const u of r.friends || []) friends.set(u.id, u);
      if (!r.next) break;
      cursor = r.next;
    }
    const req = await api('GET', '/api/friends/requests');
    state.friends = friends;
    state.incoming = new Map((req.incoming || []).map((u) => [u.id, u]));
    state.outgoing = new Map((req.outgoing || []).map((u) => [u.id, u]));
    renderRelations();
  }

  async function search(more) {
    const s = state.search;
    if (!more) {
      s.q = $('search-input').value.trim();
      s.next = null;
      s.users = [];
      if (!s.q) { renderSearch(); return; }
    }
    let url = '/api/users?limit=' + SEARCH_PAGE + '&q=' + encodeURIComponent(s.q);
    if (more && s.next) url += '&cursor=' + encodeURIComponent(s.next);
    const r = await api('GET', url);
    const seen = new Set(s.users.map((u) => u.id));
    for (const u of r.users || []) if (!seen.has(u.id)) s.users.push(u);
    s.next = r.next || null;
    renderSearch();
  }

  // ---------- posts and the feed ----------

  function postItem(p) {
    const author = p.author || {};
    return el('li', { class: 'card post', test: 'post', 'data-post-id': p.id },
      el('div', { class: 'post-head' },
        avatar(author),
        el('div', null,
          el('div', { class: 'name', test: 'post-author', text: fullName(author) }),
          el('time', { class: 'muted small', datetime: new Date(Number(p.created_at) || 0).toISOString(), text: when(p.created_at) }))),
      el('p', { class: 'post-text', test: 'post-text', text: p.text }));
  }

  function renderFeed() {
    const ol = $('feed-list');
    clear(ol);
    for (const p of state.feed) ol.appendChild(postItem(p));
    $('feed-empty').hidden = state.feed.length > 0;
    $('feed-older').hidden = state.feedDone || state.feed.length === 0;
  }

  function addPostOnTop(p) {
    if (state.feedIds.has(p.id)) return;
    state.feedIds.add(p.id);
    state.feed.unshift(p);
    const item = postItem(p);
    item.classList.add('fresh');
    $('feed-list').prepend(item);
    $('feed-empty').hidden = true;
  }

  async function loadFeed() {
    const r = await api('GET', '/api/feed?limit=' + PAGE);
    state.feed = r.posts || [];
    state.feedIds = new Set(state.feed.map((p) => p.id));
    state.feedDone = state.feed.length < PAGE;
    renderFeed();
  }

  async function olderFeed() {
    const last = state.feed[state.feed.length - 1];
    if (!last) return;
    const r = await api('GET', '/api/feed?limit=' + PAGE + '&before=' + encodeURIComponent(last.id));
    const posts = r.posts || [];
    for (const p of posts) {
      if (state.feedIds.has(p.id)) continue;
      state.feedIds.add(p.id);
      state.feed.push(p);
      $('feed-list').appendChild(postItem(p));
    }
    state.feedDone = posts.length < PAGE;
    $('feed-older').hidden = state.feedDone;
  }

  async function createPost() {
    const ta = $('post-text');
    const text = ta.value;
    if (!text.trim()) return;
    const r = await api('POST', '/api/posts', { text });
    ta.value = '';
    updateCount();
    if (r.post) addPostOnTop(r.post);
  }

  function updateCount() {
    $('post-count').textContent = $('post-text').value.length + ' / 5000';
  }

  // ---------- chats ----------

  function chatTitle(c) {
    if (c.kind === 'group') return c.title || 'Group';
    const others = (c.members || []).filter((m) => !state.me || m.id !== state.me.id);
    return others.length ? others.map(fullName).join(', ') : 'Just you';
  }

  function memberName(chat, id) {
    if (state.me && id === state.me.id) return 'You';
    const m = (chat.members || []).find((u) => u.id === id);
    return m ? fullName(m) : (state.friends.get(id) ? fullName(state.friends.get(id)) : 'someone');
  }

  function renderChats() {
    const ul = $('chats-list');
    clear(ul);
    for (const c of state.chats) {
      const other = c.kind === 'dialog' ? (c.members || []).find((m) => !state.me || m.id !== state.me.id) : null;
      const unread = Number(c.unread) || 0;
      const li = el('li', {
        class: 'chat-item' + (state.open && state.open.chat.id === c.id ? ' active' : '') + (unread ? ' has-unread' : ''),
        test: 'chat', 'data-chat-id': c.id, role: 'button', tabindex: '0',
      },
      c.kind === 'group' ? el('span', { class: 'avatar group', 'aria-hidden': 'true', text: '#' }) : avatar(other || {}),
      el('div', { class: 'who' },
        el('div', { class: 'name', test: 'chat-name', text: chatTitle(c) }),
        el('div', { class: 'muted small', text: c.kind === 'group' ? (c.members || []).length + ' members' : 'dialog' })),
      el('span', { class: 'badge', test: 'unread-badge', hidden: unread === 0, text: String(unread) }));
      const open = () => openChat(c.id).catch(report);
      li.addEventListener('click', open);
      li.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); open(); } });
      ul.appendChild(li);
    }
    $('chats-empty').hidden = state.chats.length > 0;
    const total = state.chats.reduce((n, c) => n + (Number(c.unread) || 0), 0);
    document.title = total ? '(' + total + ') social' : 'social';
  }

  async function loadChats() {
    const r = await api('GET', '/api/chats');
    state.chats = r.chats || [];
    if (state.open) {
      const c = state.chats.find((x) => x.id === state.open.chat.id);
      if (c) {
        state.open.chat = c;
        if (c.unread && chatVisible()) markRead(c.id);
      }
    }
    renderChats();
  }

  function setUnread(chatId, unread) {
    const c = state.chats.find((x) => x.id === chatId);
    if (!c) { loadChats().catch(report); return; }
    c.unread = unread;
    renderChats();
  }

  function chatVisible() {
    return !!state.open && !$('chat-view').hidden && document.visibilityState === 'visible';
  }

  let reading = new Set();
  function markRead(chatId) {
    if (reading.has(chatId)) return;
    reading.add(chatId);
    api('POST', '/api/chats/' + encodeURIComponent(chatId) + '/read')
      .then(() => setUnread(chatId, 0))
      .catch(report)
      .finally(() => reading.delete(chatId));
  }

  function messageItem(chat, m) {
    const mine = state.me && m.author === state.me.id;
    return el('li', { class: 'msg' + (mine ? ' mine' : ''), test: 'message-item', 'data-seq': m.seq },
      el('div', { class: 'msg-meta muted small' },
        el('span', { class: 'msg-author', text: memberName(chat, m.author) }),
        ' · ',
        el('time', { text: when(m.created_at) })),
      el('div', { class: 'msg-text', test: 'message-body', text: m.text }));
  }

  function renderMessages(stick) {
    const o = state.open;
    const ol = $('messages');
    const atBottom = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 40;
    clear(ol);
    for (const m of o.messages) ol.appendChild(messageItem(o.chat, m));
    if (o.messages.length === 0) ol.appendChild(el('li', { class: 'muted small center', text: 'No messages yet. Say hi!' }));
    $('messages-older').hidden = o.done;
    if (stick || atBottom) ol.scrollTop = ol.scrollHeight;
  }

  function mergeMessages(list) {
    const o = state.open;
    for (const m of list) {
      if (o.seqs.has(m.seq)) continue;
      o.seqs.add(m.seq);
      o.messages.push(m);
    }
    o.messages.sort((a, b) => a.seq - b.seq);
  }

  async function loadMessages(chatId) {
    const r = await api('GET', '/api/chats/' + encodeURIComponent(chatId) + '/messages?limit=' + MESSAGES_PAGE);
    const o = state.open;
    if (!o || o.chat.id !== chatId) return;
    const list = r.messages || [];
    // The newest page; keep older pages already shown.
    mergeMessages(list);
    if (o.messages.length === list.length) o.done = list.length < MESSAGES_PAGE || (list[0] && list[0].seq <= 1);
    renderMessages(true);
    if (chatVisible()) markRead(chatId);
  }

  async function olderMessages() {
    const o = state.open;
    if (!o || !o.messages.length) return;
    const first = o.messages[0].seq;
    const ol = $('messages');
    const before = ol.scrollHeight;
    const r = await api('GET', '/api/chats/' + encodeURIComponent(o.chat.id) + '/messages?limit=' + MESSAGES_PAGE + '&before=' + first);
    const list = r.messages || [];
    mergeMessages(list);
    o.done = list.length < MESSAGES_PAGE || (list[0] && list[0].seq <= 1);
    renderMessages(false);
    ol.scrollTop = ol.scrollHeight - before;
  }

  async function openChat(chatId) {
    let c = state.chats.find((x) => x.id === chatId);
    if (!c) {
      const r = await api('GET', '/api/chats/' + encodeURIComponent(chatId));
      c = r.chat;
      state.chats.unshift(c);
    }
    state.open = { chat: c, messages: [], seqs: new Set(), done: false };
    $('chat-title').textContent = chatTitle(c);
    $('chat-members').textContent = (c.members || []).map(fullName).join(', ');
    $('chat-view').hidden = false;
    $('chat-view').setAttribute('data-chat-id', c.id);
    clear($('messages'));
    renderChats();
    await loadMessages(c.id);
    $('message-text').focus();
  }

  function closeChat() {
    state.open = null;
    $('chat-view').hidden = true;
    $('chat-view').removeAttribute('data-chat-id');
    renderChats();
  }

  async function openDialog(u) {
    const r = await api('POST', '/api/chats/dialog', { user: u.id });
    const c = r.chat;
    if (!state.chats.find((x) => x.id === c.id)) state.chats.unshift(c);
    await openChat(c.id);
  }

  function onMessage(chatId, m, unread) {
    let c = state.chats.find((x) => x.id === chatId);
    if (!c) { loadChats().catch(report); return; }
    // Newest activity first.
    state.chats = [c, ...state.chats.filter((x) => x !== c)];
    c.last_seq = Math.max(Number(c.last_seq) || 0, m ? m.seq : 0);
    const o = state.open;
    if (o && o.chat.id === chatId && m) {
      const last = o.messages.length ? o.messages[o.messages.length - 1].seq : 0;
      if (last && m.seq > last + 1) {
        loadMessages(chatId).catch(report); // a gap: fetch the latest page
      } else {
        mergeMessages([m]);
        renderMessages(state.me && m.author === state.me.id);
      }
      if (chatVisible()) {
        c.unread = 0;
        if (unread) markRead(chatId);
      } else {
        c.unread = unread || 0;
      }
    } else if (typeof unread === 'number') {
      c.unread = unread;
    }
    renderChats();
  }

  async function sendMessage() {
    const o = state.open;
    const input = $('message-text');
    const text = input.value;
    if (!o || !text.trim()) return;
    const r = await api('POST', '/api/chats/' + encodeURIComponent(o.chat.id) + '/messages', { text });
    input.value = '';
    if (r.message && state.open === o) {
      mergeMessages([r.message]);
      renderMessages(true);
    }
    input.focus();
  }

  async function createGroup() {
    const title = $('group-title').value.trim();
    const members = [...$('group-members').querySelectorAll('input:checked')].map((i) => i.value);
    if (!title) { toast('Give the group a title', 'bad'); return; }
    if (members.length === 0) { toast('Pick at least one friend', 'bad'); return; }
    const r = await api('POST', '/api/chats/group', { title, members });
    $('group-title').value = '';
    for (const i of $('group-members').querySelectorAll('input:checked')) i.checked = false;
    $('group-box').open = false;
    if (!state.chats.find((x) => x.id === r.chat.id)) state.chats.unshift(r.chat);
    await openChat(r.chat.id);
  }

  // ---------- wiring ----------

  function wire() {
    $('signup-form').addEventListener('submit', onSignup);
    $('login-form').addEventListener('submit', onLogin);
    $('logout').addEventListener('click', logout);

    const searchBtn = $('search-form').querySelector('button');
    $('search-form').addEventListener('submit', action(searchBtn, () => search(false)));
    $('search-more').addEventListener('click', action($('search-more'), () => search(true)));

    const postBtn = $('post-form').querySelector('button');
    $('post-form').addEventListener('submit', action(postBtn, createPost));
    $('post-text').addEventListener('input', updateCount);
    $('post-text').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) $('post-form').requestSubmit();
    });
    $('feed-older').addEventListener('click', action($('feed-older'), olderFeed));

    const sendBtn = $('message-form').querySelector('button');
    $('message-form').addEventListener('submit', action(sendBtn, sendMessage));
    $('messages-older').addEventListener('click', action($('messages-older'), olderMessages));
    $('chat-close').addEventListener('click', closeChat);
    const groupBtn = $('group-form').querySelector('button');
    $('group-form').addEventListener('submit', action(groupBtn, createGroup));

    document.addEventListener('visibilitychange', () => {
      const o = state.open;
      if (o && chatVisible() && Number(o.chat.unread)) markRead(o.chat.id);
    });
  }

  async function start() {
    wire();
    try {
      const r = await api('GET', '/api/me');
      await signedIn(r.user);
    } catch (_) {
      showAuth();
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
