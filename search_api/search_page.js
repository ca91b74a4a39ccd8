// Staff search page: search as you type, keyboard first. Plain JavaScript, no build step.
//
// Privacy rules this file keeps: the API key and staff user live in sessionStorage only;
// nothing typed or shown ever goes into the URL, the history state or a log; the detail
// panel adds one history entry holding {panel: "detail"} so Back closes it, nothing more.
'use strict';

(() => {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content || '';
  const DATE_ORDER = /^(MDY|DMY|YMD)$/.test(meta('clinic-date-order')) ? meta('clinic-date-order') : 'MDY';
  const DEBOUNCE_MS = 120;
  const LIMIT = 15;
  const KEY_ITEM = 'patient-search.key';
  const STAFF_ITEM = 'patient-search.staff';
  const $ = (id) => document.getElementById(id);
  const el = {
    signIn: $('sign-in'), signInForm: $('sign-in-form'), signInWhy: $('sign-in-why'),
    signInError: $('sign-in-error'), key: $('key'), staff: $('staff'),
    staffOptional: $('staff-optional'), who: $('who-label'), signOut: $('sign-out'),
    search: $('search'), q: $('q'), inactive: $('inactive'), banner: $('banner'),
    reading: $('reading'), chips: $('chips'), status: $('status'), results: $('results'),
    empty: $('empty'), detail: $('detail'), detailBack: $('detail-back'),
    detailTitle: $('detail-title'), detailSub: $('detail-sub'),
    detailInactive: $('detail-inactive'), detailDups: $('detail-dups'),
    detailFields: $('detail-fields'), detailError: $('detail-error'),
  };
  const state = {
    key: '', staff: '', staffRequired: false,
    results: [], active: -1,
    seq: 0, controller: null, timer: null, retryTimer: null, countdown: null,
    pending: false, openWhenReady: false, failures: 0, detailSeq: 0,
  };

  // ---- small helpers -------------------------------------------------------------------

  function node(tag, attrs, ...children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') n.className = v; else n.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === '') continue;
      n.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return n;
  }

  function formatDate(iso) {
    if (!iso) return '';
    const [y, m, d] = iso.split('-');
    if (DATE_ORDER === 'DMY') return `${+d}/${+m}/${y}`;
    if (DATE_ORDER === 'YMD') return iso;
    return `${+m}/${+d}/${y}`;
  }

  function age(iso) {
    if (!iso) return '';
    const [y, m, d] = iso.split('-').map(Number);
    const now = new Date();
    const before = now.getMonth() + 1 < m || (now.getMonth() + 1 === m && now.getDate() < d);
    const years = now.getFullYear() - y - (before ? 1 : 0);
    if (years >= 2) return `${years} y`;
    const months = (now.getFullYear() - y) * 12 + (now.getMonth() + 1 - m) - (now.getDate() < d ? 1 : 0);
    return months >= 1 ? `${months} mo` : 'newborn';
  }

  const SEX = { female: 'Female', male: 'Male', other: 'Other', unknown: 'Unknown' };
  const KIND = { exact: 'Exact match', prefix: 'Starts with', phonetic: 'Sounds like', fuzzy: 'Close spelling' };
  const GRADE = { certain: 'Strong match', probable: 'Likely match', possible: 'Possible match' };

  function formatE164(p) {
    const us = /^\+1(\d{3})(\d{3})(\d{4})$/.exec(p || '');
    return us ? `(${us[1]}) ${us[2]}-${us[3]}` : p;
  }

  // Text with the matched character ranges wrapped in <mark>; `shape` (e.g. capitals) applies
  // per piece, so ranges computed on the stored value stay right.
  function marked(text, spans, shape) {
    const value = String(text ?? '');
    const f = shape || ((s) => s);
    const ranges = (spans || []).map((s) => [Math.max(0, s.start), Math.min(value.length, s.end)])
      .filter(([a, b]) => b > a).sort((a, b) => a[0] - b[0]);
    const out = [];
    let at = 0;
    for (const [a, b] of ranges) {
      if (a < at) continue;
      if (a > at) out.push(f(value.slice(at, a)));
      out.push(node('mark', null, f(value.slice(a, b))));
      at = b;
    }
    if (at < value.length) out.push(f(value.slice(at)));
    return out;
  }

  const spansOf = (result, field, index) => (result.highlights || [])
    .filter((h) => h.field === field && (index === undefined || h.index === index));

  function displayName(result, withMarks) {
    const p = result.patient;
    const m = (field, shape) => (withMarks ? marked(p[field], spansOf(result, field), shape) : (shape ? shape(p[field]) : p[field]));
    const upper = (s) => String(s ?? '').toLocaleUpperCase();
    const parts = [];
    if (p.family_name) parts.push(node('span', { class: 'family' }, m('family_name', upper)));
    const first = [];
    if (p.given_name) first.push(m('given_name'));
    if (p.middle_name) first.push(' ', m('middle_name'));
    if (parts.length && first.length) parts.push(', ');
    parts.push(...first.flat());
    if (!parts.length) parts.push('(no name recorded)');
    return parts;
  }

  const plainName = (result) => node('span', null, displayName(result, false)).textContent;

  // ---- identity: asked once, kept for this tab only ------------------------------------

  function headers() {
    const h = { 'Content-Type': 'application/json', 'X-API-Key': state.key };
    if (state.staff) h['X-Staff-User'] = state.staff;
    return h;
  }

  function showSignIn(message, needStaff) {
    state.staffRequired = state.staffRequired || !!needStaff;
    el.search.hidden = true;
    el.signIn.hidden = false;
    el.signOut.hidden = true;
    el.who.textContent = '';
    el.key.value = state.key;
    el.staff.value = state.staff;
    el.staff.required = state.staffRequired;
    el.staffOptional.textContent = state.staffRequired ? '(required by this key)' : '(if your organization asks for it)';
    el.signInError.textContent = message || '';
    (needStaff && state.key ? el.staff : el.key).focus();
  }

  function showSearch() {
    el.signIn.hidden = true;
    el.search.hidden = false;
    el.signOut.hidden = false;
    el.who.textContent = state.staff ? `Staff user: ${state.staff}` : 'Key set for this tab';
    el.q.focus();
  }

  function signIn(event) {
    event.preventDefault();
    const key = el.key.value.trim();
    const staff = el.staff.value.trim();
    if (!key) { el.signInError.textContent = 'Enter the API key.'; el.key.focus(); return; }
    if (state.staffRequired && !staff) {
      el.signInError.textContent = 'This key needs your staff user ID.'; el.staff.focus(); return;
    }
    state.key = key;
    state.staff = staff;
    sessionStorage.setItem(KEY_ITEM, key);
    if (staff) sessionStorage.setItem(STAFF_ITEM, staff); else sessionStorage.removeItem(STAFF_ITEM);
    showSearch();
    if (el.q.value.trim()) run();
  }

  function signOut() {
    sessionStorage.removeItem(KEY_ITEM);
    sessionStorage.removeItem(STAFF_ITEM);
    state.key = '';
    state.staff = '';
    clearAll();
    showSignIn('');
  }

  // ---- banners and status ----------------------------------------------------------------

  function banner(kind, text) {
    el.banner.dataset.kind = kind || '';
    el.banner.textContent = text || '';
    el.banner.hidden = !text;
    el.banner.setAttribute('role', kind === 'degraded' || !kind ? 'status' : 'alert');
  }

  function stopRetry() {
    clearTimeout(state.retryTimer);
    clearInterval(state.countdown);
    state.retryTimer = null;
    state.countdown = null;
  }

  function retryIn(seconds, kind, say) {
    stopRetry();
    let left = Math.max(1, Math.round(seconds));
    const show = () => banner(kind, say(left));
    show();
    state.countdown = setInterval(() => { left -= 1; if (left > 0) show(); }, 1000);
    state.retryTimer = setTimeout(() => { stopRetry(); run(); }, left * 1000);
  }

  function unreachable(retryAfter) {
    state.failures += 1;
    if (state.results.length) el.status.textContent = 'The list below answers an earlier search; it is not up to date.';
    const wait = retryAfter || Math.min(30, 2 ** Math.min(state.failures, 5));
    retryIn(wait, 'unreachable', (s) =>
      `Patient search is not answering right now. What you typed is kept; trying again in ${s} s.`);
  }

  // ---- search as you type ----------------------------------------------------------------

  function clearAll() {
    stopRetry();
    clearTimeout(state.timer);
    if (state.controller) state.controller.abort();
    state.seq += 1;
    state.pending = false;
    state.openWhenReady = false;
    state.results = [];
    state.active = -1;
    el.results.replaceChildren();
    el.chips.replaceChildren();
    el.reading.hidden = true;
    el.empty.hidden = true;
    el.status.textContent = '';
    banner('', '');
    syncCombobox();
  }

  function schedule() {
    performance.mark('ps-key');
    state.openWhenReady = false;
    clearTimeout(state.timer);
    // What is on its way answers older text: drop it, so no answer shows after a newer key.
    state.seq += 1;
    if (state.controller) state.controller.abort();
    if (!el.q.value.trim()) { clearAll(); return; }
    state.pending = true;
    state.timer = setTimeout(run, DEBOUNCE_MS);
  }

  async function run() {
    clearTimeout(state.timer);
    stopRetry();
    const text = el.q.value.trim();
    if (!text) { clearAll(); return; }
    if (!state.key) { showSignIn(''); return; }
    const mine = ++state.seq;
    if (state.controller) state.controller.abort();  // a newer question makes the old one moot
    const controller = new AbortController();
    state.controller = controller;
    state.pending = true;
    let response;
    let body = null;
    try {
      response = await fetch('/v1/patients/search', {
        method: 'POST',
        headers: headers(),
        body: JSON.stringify({ q: text, limit: LIMIT, include_inactive: el.inactive.checked }),
        signal: controller.signal,
        cache: 'no-store',
        credentials: 'omit',
      });
      body = await response.json().catch(() => null);
    } catch (err) {
      if (mine !== state.seq) return;  // aborted or overtaken: a newer answer is coming
      state.pending = false;
      unreachable();
      return;
    }
    if (mine !== state.seq) return;  // stale: drop it
    state.controller = null;
    state.pending = false;
    answer(response, body, mine);
  }

  function answer(response, body, mine) {
    const error = body?.error || {};
    const said = `${error.code || ''} ${error.message || ''}`;
    if (response.ok && body?.results) {
      state.failures = 0;
      render(body, mine);
      return;
    }
    state.openWhenReady = false;
    if (response.status === 401) {
      sessionStorage.removeItem(KEY_ITEM);
      state.key = '';
      showSignIn('That API key was not accepted (unknown, expired or revoked). Paste a current key.');
    } else if (response.status === 400 && /staff/i.test(said)) {
      showSignIn('This key needs your staff user ID before it can search.', true);
    } else if (response.status === 429) {
      const wait = Number(response.headers.get('Retry-After')) || 5;
      retryIn(wait, 'limited', (s) =>
        `Too many searches in a short time from this key. Searching again in ${s} s.`);
    } else if (response.status >= 500) {
      unreachable(Number(response.headers.get('Retry-After')) || 0);
    } else if (response.status === 403) {
      banner('refused', `This key may not search patients: ${error.message || 'ask your administrator'}.`);
    } else {
      // 400/422: the query cannot be searched as it is; say what the service said.
      clearResults();
      banner('', '');
      el.empty.replaceChildren(
        node('p', null, node('strong', null, 'Keep typing. '), error.message || 'The search could not be read.'),
        node('p', null, 'Add a date of birth or a phone number to the name.'),
      );
      el.empty.hidden = false;
    }
  }

  function clearResults() {
    state.results = [];
    state.active = -1;
    el.results.replaceChildren();
    el.status.textContent = '';
    syncCombobox();
  }

  // ---- rendering -------------------------------------------------------------------------

  function readingChips(query) {
    const chips = [];
    const names = query.names || [];
    const given = query.given || [];
    const family = query.family || [];
    if (family.length) chips.push(['family name:', family.join(' ')]);
    if (given.length) chips.push(['given name:', given.join(' ')]);
    const rest = names.filter((n) => !family.includes(n) && !given.includes(n));
    if (rest.length) chips.push(['name:', rest.join(' ')]);
    if ((query.birth_dates || []).length) chips.push(['born:', query.birth_dates.map(formatDate).join(' or ')]);
    if ((query.birth_years || []).length) chips.push(['born in', query.birth_years.join(' or ')]);
    for (const p of query.phones || []) chips.push(['phone:', formatE164(p)]);
    for (const f of query.phone_fragments || []) chips.push(['phone ends', f]);
    for (const e of query.emails || []) chips.push(['email:', e]);
    for (const m of query.mrns || []) chips.push(['MRN:', m]);
    return chips;
  }

  function render(body, mine) {
    const query = body.query || {};
    const chips = readingChips(query);
    el.chips.replaceChildren(...chips.map(([label, value]) => node('li', null, node('b', null, label), ' ', value)));
    el.reading.hidden = !chips.length;
    if (body.degraded) {
      banner('degraded', 'Searching on the backup engine: results may be slower or miss recent changes. You can keep working.');
    } else {
      banner('', '');
    }
    state.results = body.results;
    state.active = state.results.length ? 0 : -1;
    const byId = new Map(state.results.map((r, i) => [r.id, i]));
    el.results.replaceChildren(...state.results.map((r, i) => row(r, i, byId)));
    const n = state.results.length;
    el.status.textContent = n ? `${n === LIMIT ? `First ${n}` : n} patient${n === 1 ? '' : 's'}, best match first.` : '';
    el.empty.hidden = n > 0;
    if (!n) emptyState(query);
    syncCombobox();
    // Keystroke to rendered results, for the page-latency benchmark: measured at the next
    // frame, and only while no newer key was pressed.
    requestAnimationFrame(() => {
      if (mine !== state.seq) return;
      try {
        performance.measure('ps-keystroke-to-results', 'ps-key');
        performance.clearMarks('ps-key');  // a long day of typing keeps no growing list
        if (performance.getEntriesByName('ps-keystroke-to-results').length > 500) performance.clearMeasures();
      } catch (e) { /* a render without a keystroke (retry, checkbox): nothing to measure */ }
    });
    if (state.openWhenReady && n) { state.openWhenReady = false; openDetail(0); }
  }

  function emptyState(query) {
    const tips = [];
    const example = formatDate('1985-03-14');
    if (!(query.birth_dates || []).length) tips.push(`add the date of birth (for example ${example})`);
    if (!(query.phones || []).length && !(query.phone_fragments || []).length) tips.push('add a phone number, or its last 4 digits');
    if ((query.names || []).length > 2) tips.push('type fewer name words: one given and one family name is enough');
    if (!el.inactive.checked) tips.push('tick “Include inactive patients”');
    el.empty.replaceChildren(
      node('p', null, node('strong', null, 'No patient matches this search.'),
        ' Typos, nicknames and swapped names are already allowed.'),
      tips.length ? node('p', null, 'To find them: ') : '',
      tips.length ? node('ul', null, tips.map((t) => node('li', null, t))) : '',
    );
  }

  function phonesLine(result) {
    const shown = result.phones_formatted?.length ? result.phones_formatted
      : (result.patient.phones || []).map((p) => p.value);
    const out = [];
    shown.slice(0, 2).forEach((text, i) => {
      if (i) out.push(', ');
      out.push(...marked(text, spansOf(result, 'phones', i)));
    });
    if (shown.length > 2) out.push(` +${shown.length - 2}`);
    return out;
  }

  // Both records match the query well (the API's calibrated grade): more likely one person.
  const SURE = new Set(['certain', 'probable']);
  function dupLabel(result, other) {
    return SURE.has(result.grade) && SURE.has(other?.grade) ? 'Likely duplicate' : 'Possible duplicate';
  }

  // The shown date's marked part: all of it, or its year when only the year matched
  // (spans are over the stored ISO date, whose first four characters are the year).
  function dateHit(result, iso, shown) {
    const spans = spansOf(result, 'birth_date');
    if (!spans.length) return [];
    const at = shown.lastIndexOf(iso.slice(0, 4));
    return spans.every((s) => s.end <= 4) && at >= 0 ? [{ start: at, end: at + 4 }] : [{ start: 0, end: 99 }];
  }

  function row(result, i, byId) {
    const p = result.patient;
    const dups = (result.duplicates || []).filter((d) => byId.has(d.id));
    const firstOther = dups.length ? state.results[byId.get(dups[0].id)] : null;
    const facts = [];
    if (p.birth_date) {
      const shown = formatDate(p.birth_date);
      facts.push(node('span', null, node('span', { class: 'lbl' }, 'Born '), marked(shown, dateHit(result, p.birth_date, shown)), ` (${age(p.birth_date)})`));
    }
    if (p.sex) facts.push(node('span', null, SEX[p.sex] || p.sex));
    if (p.mrn) facts.push(node('span', null, node('span', { class: 'lbl' }, 'MRN '), marked(p.mrn, spansOf(result, 'mrn'))));
    if ((p.phones || []).length) facts.push(node('span', null, node('span', { class: 'lbl' }, 'Phone '), phonesLine(result)));
    const emailHits = (p.emails || []).map((e, k) => [e, spansOf(result, 'emails', k)]).filter(([, s]) => s.length);
    for (const [e, s] of emailHits) facts.push(node('span', null, node('span', { class: 'lbl' }, 'Email '), marked(e.value, s)));
    const side = GRADE[result.grade] || KIND[result.match] || '';
    return node('li', { role: 'option', id: `opt-${i}`, 'aria-selected': i === state.active ? 'true' : 'false', 'data-id': result.id },
      node('div', { class: 'name' }, displayName(result, true),
        p.active === false ? node('span', { class: 'badge badge-inactive' }, 'Inactive') : '',
        dups.length ? node('span', { class: 'badge badge-dup' }, dupLabel(result, firstOther)) : ''),
      node('div', { class: 'side' }, side),
      node('div', { class: 'facts' }, facts),
      dups.length ? node('div', { class: 'dup-why' }, dups.map((d, k) => {
        const other = state.results[byId.get(d.id)];
        return `${k ? '; ' : ''}May be the same person as ${plainName(other)} (result ${byId.get(d.id) + 1}): ${d.why}`;
      })) : '');
  }

  function syncCombobox() {
    const n = state.results.length;
    el.q.setAttribute('aria-expanded', n ? 'true' : 'false');
    for (const li of el.results.children) {
      li.setAttribute('aria-selected', li.id === `opt-${state.active}` ? 'true' : 'false');
    }
    if (state.active >= 0 && n) {
      el.q.setAttribute('aria-activedescendant', `opt-${state.active}`);
      $(`opt-${state.active}`)?.scrollIntoView({ block: 'nearest' });
    } else {
      el.q.removeAttribute('aria-activedescendant');
    }
  }

  function move(step) {
    const n = state.results.length;
    if (!n) return;
    state.active = Math.min(n - 1, Math.max(0, state.active + step));
    syncCombobox();
  }

  // ---- detail panel ----------------------------------------------------------------------

  function fillDetail(result, record, phones) {
    const p = record;
    el.detailTitle.replaceChildren(...displayName({ ...result, patient: p }, false));
    el.detailSub.textContent = [p.birth_date ? `Born ${formatDate(p.birth_date)} (${age(p.birth_date)})` : '', SEX[p.sex] || p.sex || '']
      .filter(Boolean).join(' · ');
    el.detailInactive.hidden = p.active !== false;
    const rows = [
      ['MRN', p.mrn || '—'],
      ['Date of birth', p.birth_date ? formatDate(p.birth_date) : '—'],
      ['Sex', SEX[p.sex] || p.sex || '—'],
      ['Phones', (p.phones || []).length ? (p.phones || []).map((ph, i) => `${phones[i] || ph.value}${ph.use ? ` (${ph.use})` : ''}`).join('\n') : '—'],
      ['Emails', (p.emails || []).length ? p.emails.map((e) => `${e.value}${e.use ? ` (${e.use})` : ''}`).join('\n') : '—'],
      ['Postal code', p.postal_code || '—'],
      ['Status', p.active === false ? 'Inactive' : 'Active'],
      ['Clinic', p.clinic_id || '—'],
    ];
    el.detailFields.replaceChildren(...rows.flatMap(([k, v]) => [
      node('dt', null, k),
      node('dd', null, String(v).split('\n').flatMap((line, i) => (i ? [node('br'), line] : [line]))),
    ]));
    const byId = new Map(state.results.map((r, i) => [r.id, i]));
    const dups = (result.duplicates || []).filter((d) => byId.has(d.id));
    el.detailDups.replaceChildren(...dups.map((d) => node('p', { class: 'dup-why' },
      node('span', { class: 'badge badge-dup' }, dupLabel(result, state.results[byId.get(d.id)])), ' ',
      `May be the same person as ${plainName(state.results[byId.get(d.id)])}: ${d.why}. Consider flagging a duplicate instead of registering a new patient.`)));
  }

  async function openDetail(i) {
    const result = state.results[i];
    if (!result) return;
    state.active = i;
    syncCombobox();
    el.detailError.textContent = '';
    fillDetail(result, result.patient, result.phones_formatted || []);
    if (!el.detail.open) {
      history.pushState({ panel: 'detail' }, '');  // same URL; Back closes the panel
      el.detail.showModal();
    }
    el.detailTitle.focus();
    const mine = ++state.detailSeq;
    try {
      const response = await fetch(`/v1/patients/${encodeURIComponent(result.id)}`, {
        headers: headers(), cache: 'no-store', credentials: 'omit',
      });
      const body = await response.json().catch(() => null);
      if (mine !== state.detailSeq || !el.detail.open) return;
      if (response.ok && body?.patient) {
        fillDetail(result, body.patient, body.phones_formatted || []);
      } else if (response.status === 404) {
        el.detailError.textContent = 'This record is no longer available (deleted or moved). Search again.';
      } else {
        el.detailError.textContent = body?.error?.message
          ? `Could not load the full record: ${body.error.message}` : 'Could not load the full record.';
      }
    } catch (err) {
      if (mine === state.detailSeq) el.detailError.textContent = 'Patient search is not answering; showing the record from the results.';
    }
  }

  function closeDetail(fromHistory) {
    if (!el.detail.open) return;
    state.detailSeq += 1;
    el.detail.close();
    if (!fromHistory && history.state?.panel) history.back();
    el.q.focus();
    syncCombobox();
  }

  // ---- wiring ----------------------------------------------------------------------------

  el.q.addEventListener('input', schedule);
  el.q.addEventListener('keydown', (event) => {
    if (event.isComposing) return;
    if (event.key === 'ArrowDown') { event.preventDefault(); move(1); }
    else if (event.key === 'ArrowUp') { event.preventDefault(); move(-1); }
    else if (event.key === 'PageDown') { event.preventDefault(); move(5); }
    else if (event.key === 'PageUp') { event.preventDefault(); move(-5); }
    else if (event.key === 'Enter') {
      event.preventDefault();
      if (state.pending) state.openWhenReady = true;  // open the answer to what was typed last
      else if (state.active >= 0) openDetail(state.active);
    } else if (event.key === 'Escape') {
      event.preventDefault();
      el.q.value = '';
      clearAll();
    }
  });
  el.results.addEventListener('mousedown', (event) => event.preventDefault());  // keep focus in the box
  el.results.addEventListener('click', (event) => {
    const li = event.target.closest('li[role="option"]');
    if (li) openDetail(Number(li.id.slice(4)));
  });
  el.inactive.addEventListener('change', () => { if (el.q.value.trim()) run(); el.q.focus(); });
  el.detail.addEventListener('cancel', (event) => { event.preventDefault(); closeDetail(false); });
  el.detailBack.addEventListener('click', () => closeDetail(false));
  window.addEventListener('popstate', () => closeDetail(true));
  el.signInForm.addEventListener('submit', signIn);
  el.signOut.addEventListener('click', signOut);

  // A reload must not reopen a panel that is gone: drop a leftover history marker.
  if (history.state?.panel) history.replaceState(null, '');
  state.key = sessionStorage.getItem(KEY_ITEM) || '';
  state.staff = sessionStorage.getItem(STAFF_ITEM) || '';
  if (state.key) showSearch(); else showSignIn('');
})();
