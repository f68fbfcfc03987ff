// Proof-of-work bot check for forms that carry a `data-pow-challenge` attribute.
//
// The server signs a challenge and puts it on the form (and, ideally, in a hidden
// `pow_challenge` input). On submit this script finds a counter such that
// SHA-256(challenge + ":" + counter) starts with `difficulty` zero bits, writes it to the hidden
// `pow_solution` input and submits the form again. The server format and the reasoning live in
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

  async function solve(challenge, difficulty) {
    var prefix = challenge + ":";
    for (var base = 0; base < Number.MAX_SAFE_INTEGER; base += BATCH) {
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

  function onSubmit(event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-pow-challenge")) {
      return;
    }
    var challenge = form.getAttribute("data-pow-challenge") || "";
    var solution = hiddenInput(form, "pow_solution");
    if (form.getAttribute("data-pow-solved") === challenge && solution.value !== "") {
      // Second pass, after solving: let the browser submit.
      return;
    }
    event.preventDefault();
    if (form.getAttribute("aria-busy") === "true") {
      // Already solving (double click): the first pass will submit.
      return;
    }
    var difficulty = difficultyOf(challenge);
    if (difficulty === null || !window.crypto || !crypto.subtle) {
      // crypto.subtle exists only in secure contexts (HTTPS, or localhost during development).
      setStatus(form, FAILED);
      return;
    }
    var submitter = event.submitter && event.submitter.form === form ? event.submitter : null;
    form.setAttribute("aria-busy", "true");
    setStatus(form, CHECKING);
    solve(challenge, difficulty).then(
      function (counter) {
        hiddenInput(form, "pow_challenge").value = challenge;
        solution.value = String(counter);
        form.setAttribute("data-pow-solved", challenge);
        form.removeAttribute("aria-busy");
        // requestSubmit runs validation and submit handlers again and keeps the clicked button's
        // name/value in the submission; submit() would skip both.
        if (typeof form.requestSubmit === "function") {
          if (submitter) {
            form.requestSubmit(submitter);
          } else {
            form.requestSubmit();
          }
        } else {
          form.submit();
        }
      },
      function () {
        form.removeAttribute("aria-busy");
        setStatus(form, FAILED);
      }
    );
  }

  // Listening on the document covers forms rendered after this script ran.
  document.addEventListener("submit", onSubmit);
})();
