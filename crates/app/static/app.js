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
