// Small enhancements shared by every page; each page works without them.
//
// - A form marked `data-confirm="…"` asks first (a native confirm dialog) and, once confirmed,
//   carries `confirm=yes`, so the server acts at once; without JavaScript the server answers the
//   same form with a confirmation page instead.
//
// - A menu (`<details data-menu>`: the organization switcher, the narrow navigation) closes
//   when a click lands outside it or on Escape (focus goes back to its summary); without
//   JavaScript it opens and closes with its summary.
//
// - A region marked `data-live="<seconds>"` (an export's progress) is fetched again from the
//   same page every so many seconds and replaced in place, inside an `aria-live` region, until
//   the new copy no longer asks for it; without JavaScript a link reloads the page. (Not a
//   meta refresh: a page that reloads itself on a timer takes the reader's place away.)
//
// - A table too wide for the screen scrolls sideways in its `.table-wrap`; while it does, the
//   wrap is a focusable region named after the table's heading, so a keyboard can scroll it
//   too (arrow keys once focused). Without JavaScript it still scrolls by pointer and touch.
//
// Loaded as a file (CSP `script-src 'self'`): no inline script, no eval, no inline styles.
(function () {
  'use strict';

  document.addEventListener('submit', function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute('data-confirm')) {
      return;
    }
    if (form.querySelector('input[name="confirm"][value="yes"]')) {
      return;
    }
    if (!window.confirm(form.getAttribute('data-confirm'))) {
      event.preventDefault();
      return;
    }
    var input = document.createElement('input');
    input.type = 'hidden';
    input.name = 'confirm';
    input.value = 'yes';
    form.appendChild(input);
  });

  function openMenus() {
    return Array.prototype.slice.call(document.querySelectorAll('details[data-menu][open]'));
  }
  document.addEventListener('click', function (event) {
    openMenus().forEach(function (menu) {
      if (!menu.contains(event.target)) {
        menu.removeAttribute('open');
      }
    });
  });
  function refreshLive(region) {
    var seconds = parseInt(region.getAttribute('data-live'), 10);
    if (!(seconds > 0) || !region.id) {
      return;
    }
    window.setTimeout(function () {
      fetch(window.location.href, { credentials: 'same-origin', headers: { Accept: 'text/html' } })
        .then(function (res) {
          return res.ok ? res.text() : Promise.reject(new Error('status ' + res.status));
        })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, 'text/html').getElementById(region.id);
          if (!fresh) {
            return;
          }
          region.replaceChildren.apply(region, Array.prototype.slice.call(fresh.childNodes));
          if (fresh.hasAttribute('data-live')) {
            refreshLive(region);
          } else {
            region.removeAttribute('data-live');
          }
        })
        .catch(function () {
          // Offline or signed out: the reload link stays for the reader to use.
        });
    }, seconds * 1000);
  }
  document.querySelectorAll('[data-live]').forEach(refreshLive);

  function tableName(wrap) {
    var caption = wrap.querySelector('caption');
    if (caption && caption.textContent.trim()) {
      return caption.textContent.trim();
    }
    // The nearest heading before it: among its siblings, then its parents' (a table inside a
    // form under its section's heading).
    for (var node = wrap; node && node !== document.body; node = node.parentElement) {
      for (var at = node.previousElementSibling; at; at = at.previousElementSibling) {
        if (/^H[1-6]$/.test(at.tagName) && at.textContent.trim()) {
          return at.textContent.trim() + ' (table)';
        }
      }
    }
    return 'Table';
  }
  function markScrollingTables() {
    document.querySelectorAll('.table-wrap').forEach(function (wrap) {
      var scrolls = wrap.scrollWidth > wrap.clientWidth + 1;
      if (scrolls && !wrap.hasAttribute('data-scrolls')) {
        wrap.setAttribute('data-scrolls', '');
        wrap.setAttribute('tabindex', '0');
        wrap.setAttribute('role', 'region');
        wrap.setAttribute('aria-label', tableName(wrap));
      } else if (!scrolls && wrap.hasAttribute('data-scrolls')) {
        ['data-scrolls', 'tabindex', 'role', 'aria-label'].forEach(function (name) {
          wrap.removeAttribute(name);
        });
      }
    });
  }
  markScrollingTables();
  if (window.ResizeObserver) {
    var observer = new ResizeObserver(markScrollingTables);
    document.querySelectorAll('.table-wrap').forEach(function (wrap) {
      observer.observe(wrap);
    });
  } else {
    window.addEventListener('resize', markScrollingTables);
  }

  document.addEventListener('keydown', function (event) {
    if (event.key !== 'Escape') {
      return;
    }
    openMenus().forEach(function (menu) {
      var inside = menu.contains(document.activeElement);
      menu.removeAttribute('open');
      if (inside) {
        menu.querySelector('summary').focus();
      }
    });
  });
})();
