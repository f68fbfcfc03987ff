// The daily work's small enhancements; every page works without them.
//
// - `/` (outside a text field) or Ctrl/Cmd+K focuses the header's search box
//   (`[data-search-shortcut]`); without a box on the page nothing happens.
//
// - A comment box with `data-mention-source` offers people while an `@word` is typed: it asks
//   that URL (the project's people, which the server limits to who may be mentioned) and
//   inserts `@address` for the one chosen (arrows and Enter, or a click; Escape closes).
//   Without JavaScript `@address` or `@name` is typed by hand and resolved by the server.
//
// Loaded as a file (CSP `script-src 'self'`): no inline script, no eval, no inline styles.
(function () {
  'use strict';

  function typing(el) {
    if (!el) { return false; }
    var tag = el.tagName;
    return tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT' || el.isContentEditable;
  }

  document.addEventListener('keydown', function (event) {
    var box = document.querySelector('[data-search-shortcut]');
    if (!box) { return; }
    var ctrlK = (event.ctrlKey || event.metaKey) && !event.altKey && (event.key === 'k' || event.key === 'K');
    var slash = event.key === '/' && !event.ctrlKey && !event.metaKey && !event.altKey && !typing(document.activeElement);
    if (ctrlK || slash) {
      event.preventDefault();
      box.focus();
      box.select();
    }
  });

  function picker(area) {
    var source = area.getAttribute('data-mention-source');
    var list = document.createElement('ul');
    list.className = 'mention-list';
    list.id = (area.id || 'comment') + '-mentions';
    list.setAttribute('role', 'listbox');
    list.setAttribute('aria-label', 'People to mention');
    list.hidden = true;
    area.setAttribute('aria-controls', list.id);
    area.setAttribute('aria-autocomplete', 'list');
    area.parentNode.insertBefore(list, area.nextSibling);
    var people = [];
    var active = 0;
    var pending = null;

    function word() {
      var upto = area.value.slice(0, area.selectionStart);
      var m = /(^|[\s([{,;:])@([^\s@]*)$/.exec(upto);
      return m ? { start: upto.length - m[2].length - 1, text: m[2] } : null;
    }

    function close() {
      list.hidden = true;
      list.textContent = '';
      people = [];
      area.removeAttribute('aria-activedescendant');
    }

    function render() {
      list.textContent = '';
      people.forEach(function (p, i) {
        var li = document.createElement('li');
        li.id = list.id + '-' + i;
        li.setAttribute('role', 'option');
        li.setAttribute('aria-selected', i === active ? 'true' : 'false');
        li.textContent = p.name === p.handle ? p.handle : p.name + ' (' + p.handle + ')';
        li.addEventListener('mousedown', function (e) { e.preventDefault(); choose(i); });
        list.appendChild(li);
      });
      list.hidden = people.length === 0;
      if (people.length) { area.setAttribute('aria-activedescendant', list.id + '-' + active); }
    }

    function choose(i) {
      var w = word();
      var p = people[i];
      if (!w || !p) { close(); return; }
      var before = area.value.slice(0, w.start);
      var after = area.value.slice(area.selectionStart);
      var text = '@' + p.handle + ' ';
      area.value = before + text + after;
      var at = before.length + text.length;
      area.setSelectionRange(at, at);
      close();
    }

    area.addEventListener('input', function () {
      var w = word();
      if (!w) { close(); return; }
      if (pending) { pending.abort(); }
      pending = new AbortController();
      fetch(source + '?q=' + encodeURIComponent(w.text), {
        headers: { Accept: 'application/json' },
        credentials: 'same-origin',
        signal: pending.signal
      }).then(function (r) { return r.ok ? r.json() : []; }).then(function (list) {
        people = Array.isArray(list) ? list.slice(0, 8) : [];
        active = 0;
        render();
      }).catch(function () {});
    });

    area.addEventListener('keydown', function (event) {
      if (list.hidden) { return; }
      if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
        event.preventDefault();
        active = (active + (event.key === 'ArrowDown' ? 1 : people.length - 1)) % people.length;
        render();
      } else if (event.key === 'Enter' || event.key === 'Tab') {
        event.preventDefault();
        choose(active);
      } else if (event.key === 'Escape') {
        event.preventDefault();
        close();
      }
    });
    area.addEventListener('blur', function () { setTimeout(close, 150); });
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll('textarea[data-mention-source]'), picker);
  }
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
