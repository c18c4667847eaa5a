// Proof of work for first-step forms: while the person types, find a number that makes
// SHA-256(challenge ":" number) start with the required zero bits. One solution buys one
// attempt, so scripted use costs real work. Without this script the form still works; the
// server then answers a few seconds later instead.
"use strict";
(function () {
  var form = document.querySelector("form[data-pow]");
  if (!form || !window.crypto || !window.crypto.subtle) return;
  var bits = parseInt(form.dataset.pow, 10);
  var token = form.querySelector("input[name=pow_token]").value;
  var answer = form.querySelector("input[name=pow]");
  var status = form.querySelector(".pow-status");
  var encoder = new TextEncoder();
  var solved = false;
  var submitting = false;

  function zeroBits(bytes) {
    var n = 0;
    for (var i = 0; i < bytes.length; i++) {
      if (bytes[i] === 0) { n += 8; continue; }
      return n + Math.clz32(bytes[i]) - 24;
    }
    return n;
  }

  async function solve() {
    for (var counter = 0; ; counter++) {
      var digest = await crypto.subtle.digest("SHA-256", encoder.encode(token + ":" + counter));
      if (zeroBits(new Uint8Array(digest)) >= bits) return counter;
    }
  }

  var work = solve().then(function (counter) {
    answer.value = String(counter);
    solved = true;
    if (submitting) form.submit();
  });

  form.addEventListener("submit", function (event) {
    if (solved) return;
    event.preventDefault();
    submitting = true;
    if (status) status.textContent = status.dataset.checking;
    return work;
  });
})();
