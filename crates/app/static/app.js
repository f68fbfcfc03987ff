// Small enhancements shared by every page; each page works without them.
//
// - A form marked `data-confirm="…"` asks first (a native confirm dialog) and, once confirmed,
//   carries `confirm=yes`, so the server acts at once; without JavaScript the server answers the
//   same form with a confirmation page instead.
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
})();
