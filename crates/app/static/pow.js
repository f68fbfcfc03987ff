// Proof-of-work bot check for forms that carry a `data-pow-challenge` attribute.
//
// The server signs a challenge and puts it on the form (and, ideally, in a hidden
// `pow_challenge` input). As soon as the page is ready this script finds a counter such that
// SHA-256(challenge + ":" + counter) starts with `difficulty` zero bits and writes it to the
// hidden `pow_solution` input, so the person's first click or Enter submits the form; a
// submission that comes before the solve is held ("Checking your browser…") and sent when it
// is done, never asking for a second click. The server format and the reasoning live in
// crates/app/src/abuse/botcheck.rs.
//
// Without JavaScript the form is posted with an empty `pow_solution` and the server refuses it,
// asking the user to enable JavaScript. That is deliberate: a proof of work is only a proof if
// the client ran code, so there is no script-free way to pass this check.
//
// Loaded as a file (CSP `script-src 'self'`): no inline script, no eval, no inline styles.
(function () {
  "use strict";

  var CHECKING = "Checking your browser\u2026";
  var FAILED =
    "Your browser couldn't complete the check. Please reload the page and try again.";
  // Digests requested per round trip to WebCrypto. Each digest call is asynchronous, so one at a
  // time is dominated by promise overhead; a small batch roughly doubles the hash rate in
  // Chromium while wasting at most a batch of work past the solution.
  var BATCH = 16;
  // Difficulty is also enforced by the server; this only stops a garbled page from spinning.
  var MAX_DIFFICULTY = 32;

  var encoder = new TextEncoder();

  function leadingZeroBits(bytes) {
    var bits = 0;
    for (var i = 0; i < bytes.length; i++) {
      var b = bytes[i];
      if (b === 0) {
        bits += 8;
        continue;
      }
      while ((b & 0x80) === 0) {
        bits += 1;
        b <<= 1;
      }
      break;
    }
    return bits;
  }

  // The challenge is `pow1.<purpose>.<difficulty>.<issued>.<expires>.<nonce>.<mac>`; the
  // difficulty is read from it (it is signed there) rather than from a second attribute that
  // could disagree.
  function difficultyOf(challenge) {
    var parts = challenge.split(".");
    if (parts.length !== 7 || parts[0] !== "pow1" || !/^[0-9]{1,2}$/.test(parts[2])) {
      return null;
    }
    var d = parseInt(parts[2], 10);
    return d >= 1 && d <= MAX_DIFFICULTY ? d : null;
  }

  // The solve runs while the person fills the form in, so it hands the main thread back in
  // slices: Chromium may resolve small digests as microtasks, and a loop of awaits alone would
  // then keep the page from responding (to typing, say) until the proof is done. A message to
  // ourselves is a new task without setTimeout's clamping.
  var SLICE_MS = 8;
  var channel = new MessageChannel();
  var waiting = [];
  channel.port1.onmessage = function () {
    var resume = waiting.shift();
    if (resume) {
      resume();
    }
  };
  function nextTask() {
    return new Promise(function (resolve) {
      waiting.push(resolve);
      channel.port2.postMessage(null);
    });
  }

  async function solve(challenge, difficulty) {
    var prefix = challenge + ":";
    // Started from page load: the page finishes loading first.
    await nextTask();
    var slice = performance.now();
    for (var base = 0; base < Number.MAX_SAFE_INTEGER; base += BATCH) {
      if (performance.now() - slice > SLICE_MS) {
        await nextTask();
        slice = performance.now();
      }
      var pending = [];
      for (var i = 0; i < BATCH; i++) {
        pending.push(crypto.subtle.digest("SHA-256", encoder.encode(prefix + (base + i))));
      }
      var digests = await Promise.all(pending);
      for (var j = 0; j < BATCH; j++) {
        if (leadingZeroBits(new Uint8Array(digests[j])) >= difficulty) {
          return base + j;
        }
      }
    }
    throw new Error("no solution");
  }

  function hiddenInput(form, name) {
    var input = form.querySelector('input[name="' + name + '"]');
    if (!input) {
      input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      form.appendChild(input);
    }
    return input;
  }

  // Where the "Checking your browser…" text goes: an element marked `data-pow-status` inside the
  // form if the template has one, otherwise a status line added at the end of the form.
  function statusElement(form) {
    var el = form.querySelector("[data-pow-status]");
    if (!el) {
      el = document.createElement("p");
      el.setAttribute("data-pow-status", "");
      form.appendChild(el);
    }
    el.setAttribute("role", "status");
    el.setAttribute("aria-live", "polite");
    return el;
  }

  function setStatus(form, text) {
    var el = statusElement(form);
    el.textContent = text;
    el.hidden = text === "";
  }

  // One solve per form and challenge, started as soon as the page is ready, so that by the time
  // a person has filled the form in the proof is usually done and their first click or Enter
  // goes straight through.
  var solving = new WeakMap();

  function solution(form) {
    var challenge = form.getAttribute("data-pow-challenge") || "";
    var entry = solving.get(form);
    if (entry && entry.challenge === challenge) {
      return entry;
    }
    entry = { challenge: challenge, counter: null, promise: null };
    var difficulty = difficultyOf(challenge);
    if (difficulty === null || !window.crypto || !crypto.subtle) {
      // crypto.subtle exists only in secure contexts (HTTPS, or localhost during development).
      entry.promise = Promise.reject(new Error("cannot solve"));
    } else {
      entry.promise = solve(challenge, difficulty).then(function (counter) {
        entry.counter = counter;
        fill(form, entry);
        return counter;
      });
    }
    entry.promise.catch(function () {});
    solving.set(form, entry);
    return entry;
  }

  function fill(form, entry) {
    hiddenInput(form, "pow_challenge").value = entry.challenge;
    hiddenInput(form, "pow_solution").value = String(entry.counter);
  }

  function onSubmit(event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-pow-challenge")) {
      return;
    }
    var entry = solution(form);
    if (entry.counter !== null) {
      // Solved already (the usual case): the submission goes through as it is.
      fill(form, entry);
      return;
    }
    event.preventDefault();
    if (form.getAttribute("aria-busy") === "true") {
      // Already waiting (double click): the first submission will go.
      return;
    }
    var submitter = event.submitter && event.submitter.form === form ? event.submitter : null;
    form.setAttribute("aria-busy", "true");
    setStatus(form, CHECKING);
    entry.promise.then(
      function () {
        form.removeAttribute("aria-busy");
        fill(form, entry);
        // The form was valid when it was submitted; send it as it is. submit() fires no second
        // submit event (another round through this handler, or a page's own handlers, could
        // cancel it), so the clicked button's name and value are carried in a hidden input.
        if (submitter && submitter.name) {
          hiddenInput(form, submitter.name).value = submitter.value;
        }
        HTMLFormElement.prototype.submit.call(form);
      },
      function () {
        form.removeAttribute("aria-busy");
        setStatus(form, FAILED);
      }
    );
  }

  function startAll() {
    document.querySelectorAll("form[data-pow-challenge]").forEach(function (form) {
      solution(form);
    });
  }

  // Listening on the document covers forms rendered after this script ran.
  document.addEventListener("submit", onSubmit);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startAll);
  } else {
    startAll();
  }
})();
