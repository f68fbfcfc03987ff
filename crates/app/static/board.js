// The task board, enhanced. Without JavaScript every card has a "Move to" form that works on
// its own. With it:
// - drag a card to another column, with a mouse, a pen or a finger (pointer events);
// - or, with the keyboard: focus a card, press Alt+ArrowRight / Alt+ArrowLeft;
// a move posts the card's own Move form with fetch (the CSRF token in the X-CSRF-Token
// header, checked with the Origin exactly as for the form), asking for JSON so the answer is
// the project's new task counts rather than a page. The column counts follow at once, the
// header's "N of M tasks done" when the answer comes; if the server refuses, the page reloads
// to show the board as it really is.
(function () {
  'use strict';
  var board = document.querySelector('[data-board]');
  if (!board || !window.fetch || !window.URLSearchParams) {
    return;
  }
  var live = document.createElement('p');
  live.className = 'sr-only';
  live.setAttribute('role', 'status');
  board.parentNode.insertBefore(live, board);

  function columns() {
    return Array.prototype.slice.call(board.querySelectorAll('[data-column]'));
  }

  // A column's count is every card it holds, shown or not (a long column shows its first
  // cards only), so a move adds one to the target and takes one from the source.
  function bump(column, by) {
    var count = column.querySelector('[data-count]');
    var n = count ? parseInt(count.textContent, 10) : NaN;
    if (!isNaN(n)) {
      count.textContent = String(Math.max(0, n + by));
    }
  }

  // The header's "N of M tasks done, K overdue", from the counts the move answered with.
  function progress(counts) {
    var line = document.querySelector('[data-progress]');
    if (!line || !counts || typeof counts.total !== 'number') {
      return;
    }
    line.textContent = counts.done + ' of ' + counts.total + ' tasks done';
    if (counts.overdue > 0) {
      line.appendChild(document.createTextNode(', '));
      var late = document.createElement('strong');
      late.className = 'late';
      late.textContent = counts.overdue + ' overdue';
      line.appendChild(late);
    }
  }

  function move(card, column) {
    var from = card.closest('[data-column]');
    if (!column || column === from) {
      return;
    }
    var form = card.querySelector('form[data-move]');
    var token = form.querySelector('input[name="csrf_token"]').value;
    var target = column.getAttribute('data-column');
    var body = new URLSearchParams();
    body.set('column_id', target);
    column.querySelector('[data-cards]').appendChild(card);
    bump(from, -1);
    bump(column, 1);
    var select = form.querySelector('select[name="column_id"]');
    if (select) {
      select.value = target;
    }
    var name = column.querySelector('h2 span');
    live.textContent = 'Moved to ' + (name ? name.textContent : 'another column') + '.';
    fetch(form.action, {
      method: 'POST',
      credentials: 'same-origin',
      headers: {
        'Content-Type': 'application/x-www-form-urlencoded',
        'Accept': 'application/json',
        'X-CSRF-Token': token
      },
      body: body.toString()
    }).then(function (res) {
      if (!res.ok) {
        throw new Error('move refused: ' + res.status);
      }
      return res.json();
    }).then(function (answer) {
      progress(answer && answer.progress);
    }).catch(function () {
      window.location.reload();
    });
  }

  function interactive(el) {
    return el.closest('a, button, select, input, textarea, label');
  }

  function columnAt(x, y) {
    var el = document.elementFromPoint(x, y);
    return el ? el.closest('[data-column]') : null;
  }

  var drag = null;

  function clearTargets() {
    columns().forEach(function (c) { c.classList.remove('drop-target'); });
  }

  board.querySelectorAll('[data-card]').forEach(function (card) {
    if (!card.querySelector('form[data-move]')) {
      return;
    }
    card.setAttribute('tabindex', '0');
    card.setAttribute('aria-describedby', 'board-help');
    card.addEventListener('pointerdown', function (e) {
      if (e.button !== 0 || interactive(e.target)) {
        return;
      }
      drag = { card: card, x: e.clientX, y: e.clientY, moving: false, id: e.pointerId };
    });
    card.addEventListener('keydown', function (e) {
      if (e.target !== card || !e.altKey || (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft')) {
        return;
      }
      e.preventDefault();
      var all = columns();
      var i = all.indexOf(card.closest('[data-column]'));
      var next = all[i + (e.key === 'ArrowRight' ? 1 : -1)];
      if (next) {
        move(card, next);
        card.focus();
      }
    });
  });

  document.addEventListener('pointermove', function (e) {
    if (!drag || e.pointerId !== drag.id) {
      return;
    }
    if (!drag.moving) {
      if (Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) < 8) {
        return;
      }
      drag.moving = true;
      drag.card.classList.add('dragging');
    }
    e.preventDefault();
    clearTargets();
    var column = columnAt(e.clientX, e.clientY);
    if (column) {
      column.classList.add('drop-target');
    }
  });

  function end(e) {
    if (!drag || e.pointerId !== drag.id) {
      return;
    }
    var d = drag;
    drag = null;
    clearTargets();
    if (!d.moving) {
      return;
    }
    d.card.classList.remove('dragging');
    if (e.type === 'pointerup') {
      move(d.card, columnAt(e.clientX, e.clientY));
    }
  }
  document.addEventListener('pointerup', end);
  document.addEventListener('pointercancel', end);

  var help = document.createElement('p');
  help.id = 'board-help';
  help.className = 'muted';
  help.textContent = 'Drag a card to another column, or focus it and press Alt+Arrow Right or Left.';
  board.parentNode.insertBefore(help, board);
})();
