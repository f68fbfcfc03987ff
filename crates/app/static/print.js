// The print view's "Print" button (the page is printable without it: the browser's own Print
// command uses the same print stylesheet).
(function () {
  'use strict';
  document.querySelectorAll('[data-print]').forEach(function (button) {
    button.addEventListener('click', function () {
      window.print();
    });
  });
})();
