// Ticks running timers: every element with data-timer-elapsed (seconds when the page was
// rendered) shows h:mm:ss counting on. Without JavaScript the page shows the time it was loaded.
(function () {
  var els = document.querySelectorAll('[data-timer-elapsed]');
  if (!els.length) return;
  var loaded = Date.now();
  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function tick() {
    var gone = Math.floor((Date.now() - loaded) / 1000);
    for (var i = 0; i < els.length; i++) {
      var s = parseInt(els[i].getAttribute('data-timer-elapsed'), 10) + gone;
      if (isNaN(s)) continue;
      els[i].textContent = Math.floor(s / 3600) + ':' + pad(Math.floor(s / 60) % 60) + ':' + pad(s % 60);
    }
  }
  setInterval(tick, 1000);
})();
