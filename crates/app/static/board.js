// Drag and drop on the task board, as an enhancement: every card has a "Move to" form that
// works without JavaScript. Dropping a card on a column posts that same form with fetch, the
// CSRF token in the X-CSRF-Token header (the server checks it and the Origin exactly as for
// the form), and asks for JSON so the answer is 204 rather than a page. If the server refuses,
// the page reloads to show the board as it really is.
(function () {
  'use strict';
  var board = document.querySelector('[data-board]');
  if (!board || !window.fetch || !window.URLSearchParams) {
    return;
  }
  var dragged = null;

  function columnOf(el) {
    return el.closest('[data-column]');
  }

  board.querySelectorAll('[data-card]').forEach(function (card) {
    if (!card.querySelector('form[data-move]')) {
      return;
    }
    card.setAttribute('draggable', 'true');
    card.addEventListener('dragstart', function (e) {
      dragged = card;
      card.classList.add('dragging');
      e.dataTransfer.effectAllowed = 'move';
      e.dataTransfer.setData('text/plain', card.getAttribute('data-card'));
    });
    card.addEventListener('dragend', function () {
      card.classList.remove('dragging');
      dragged = null;
    });
  });

  board.querySelectorAll('[data-column]').forEach(function (column) {
    column.addEventListener('dragover', function (e) {
      if (dragged) {
        e.preventDefault();
        column.classList.add('drop-target');
      }
    });
    column.addEventListener('dragleave', function (e) {
      if (!column.contains(e.relatedTarget)) {
        column.classList.remove('drop-target');
      }
    });
    column.addEventListener('drop', function (e) {
      e.preventDefault();
      column.classList.remove('drop-target');
      var card = dragged;
      if (!card || columnOf(card) === column) {
        return;
      }
      var form = card.querySelector('form[data-move]');
      var token = form.querySelector('input[name="csrf_token"]').value;
      var target = column.getAttribute('data-column');
      var body = new URLSearchParams();
      body.set('column_id', target);
      column.querySelector('[data-cards]').appendChild(card);
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
        var select = form.querySelector('select[name="column_id"]');
        if (select) {
          select.value = target;
        }
      }).catch(function () {
        window.location.reload();
      });
    });
  });
})();
