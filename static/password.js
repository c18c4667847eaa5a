// Progressive enhancement for password forms: the person's time zone (so that times are said
// in it), a "show password" button beside each password field, live checks of length,
// complexity and confirmation as the person types, and a "writing…" notice while the directory
// answers. The server decides; without this script the forms work the same, and times are
// given in UTC.
"use strict";
(function () {
  document.querySelectorAll("input[name=tz_offset]").forEach(function (tz) {
    tz.value = String(-new Date().getTimezoneOffset());
  });
  // One toggle per field, with a label that stays the same and its state in aria-pressed (as
  // screen readers expect of a toggle). Paste and password managers are never hindered.
  var show = document.body.dataset.showPassword;
  document.querySelectorAll("input[type=password]").forEach(function (input, i) {
    if (!show) return;
    if (!input.id) input.id = "password-field-" + i;
    var button = document.createElement("button");
    button.type = "button";
    button.className = "secondary reveal";
    button.textContent = show;
    button.setAttribute("aria-pressed", "false");
    button.setAttribute("aria-controls", input.id);
    // Shown as text, a password must not go to a spelling checker (some ask a server).
    input.setAttribute("spellcheck", "false");
    input.setAttribute("autocorrect", "off");
    input.setAttribute("autocapitalize", "none");
    button.addEventListener("click", function () {
      var shown = input.type === "password";
      input.type = shown ? "text" : "password";
      button.setAttribute("aria-pressed", String(shown));
    });
    input.insertAdjacentElement("afterend", button);
    // Sent hidden again, so that browsers offer to save it as a password.
    if (input.form) input.form.addEventListener("submit", function () {
      input.type = "password";
      button.setAttribute("aria-pressed", "false");
    });
  });
  // Active Directory's complexity rule, as the server checks it (the same Unicode properties):
  // three kinds of five (upper case, lower case, ASCII digits, neither letters nor numbers,
  // letters of neither case), and not the account name.
  function complex(pw, account) {
    var kinds = [/\p{Uppercase}/u, /\p{Lowercase}/u, /[0-9]/, /[^\p{Alphabetic}\p{N}]/u,
      /(?![\p{Uppercase}\p{Lowercase}])\p{Alphabetic}/u];
    var n = kinds.filter(function (k) { return k.test(pw); }).length;
    var named = account && account.length > 2 && pw.toLowerCase().indexOf(account.toLowerCase()) >= 0;
    return n >= 3 && !named;
  }
  // The server's reading of a text: NFKC, lower case, look-alikes as letters; `1` read both ways.
  var LOOKS = { "0": "o", "3": "e", "4": "a", "@": "a", "5": "s", "$": "s", "7": "t", "8": "b", "!": "i" };
  function readings(text) {
    var lower = text.normalize("NFKC").toLowerCase();
    var ones = lower.indexOf("1") >= 0 ? ["l", "i"] : ["l"];
    return ones.map(function (one) {
      return Array.from(lower).map(function (c) { return c === "1" ? one : (LOOKS[c] || c); }).join("");
    });
  }
  // The parts of the person's names the server refuses: words of 4 characters or more.
  function nameParts(names) {
    var parts = [];
    names.forEach(function (name) {
      name.normalize("NFKC").split(/[^\p{Alphabetic}\p{N}]+/u).forEach(function (t) {
        if (Array.from(t).length >= 4) parts = parts.concat(readings(t));
      });
    });
    return parts;
  }
  function containsName(pw, parts) {
    return readings(pw).some(function (r) {
      return parts.some(function (p) { return r.indexOf(p) >= 0; });
    });
  }
  document.querySelectorAll("form.new-password").forEach(function (form) {
    var pw = form.querySelector("input[name=password]");
    var confirm = form.querySelector("input[name=confirm]");
    var checks = form.querySelector(".checks");
    var strength = form.querySelector(".strength");
    var status = form.querySelector("#checks-status");
    var csrf = form.querySelector("input[name=csrf]");
    var min = parseInt(form.dataset.minLength || "0", 10);
    var names = pw && pw.dataset.names ? pw.dataset.names.split("\n") : [];
    var parts = nameParts(names);
    // The account name for the complexity rule: the person's, or the name typed on this form.
    var login = form.querySelector("input[name=login]");
    function account() { return names[0] || (login ? login.value.trim() : ""); }
    // What the server last said of the password typed (banned terms, strength), and of which.
    var answered = { password: null, banned: false };
    // Each rule's state as screen readers last heard it.
    var announced = {};
    function update() {
      var v = pw.value;
      checks.hidden = v.length === 0;
      if (strength && v !== answered.password) strength.hidden = true;
      checks.querySelectorAll("li").forEach(function (li) {
        var ok = false;
        switch (li.dataset.check) {
          // Counted as the server counts, the shorter way (code points, before and after NFKC).
          case "length": ok = Math.min(Array.from(v).length, Array.from(v.normalize("NFKC")).length) >= min; break;
          case "complexity": ok = complex(v, account()); break;
          case "names": ok = v.length > 0 && !containsName(v, parts); break;
          case "banned": ok = v.length > 0 && answered.password === v && !answered.banned; break;
          case "match": ok = v.length > 0 && v === confirm.value; break;
        }
        li.classList.toggle("met", ok);
      });
      // Screen readers hear which rules changed since they last heard, after a pause, not at
      // every key.
      clearTimeout(update.announce);
      update.announce = setTimeout(function () {
        if (!status || pw.value.length === 0) return;
        var changed = [];
        checks.querySelectorAll("li").forEach(function (li) {
          var ok = li.classList.contains("met");
          if (announced[li.dataset.check] !== ok) changed.push((ok ? checks.dataset.met : checks.dataset.unmet) + " " + li.textContent);
          announced[li.dataset.check] = ok;
        });
        if (changed.length > 0) status.textContent = changed.join(". ");
      }, 800);
    }
    // The server's live check (strength, banned terms) after a pause in typing; the form is
    // checked in full when it is sent, so a failed or refused check only leaves the tick off.
    function ask() {
      var v = pw.value;
      if (!csrf || v.length === 0) return;
      var body = new URLSearchParams();
      body.set("csrf", csrf.value);
      body.set("password", v);
      if (form.dataset.complexity) body.set("complexity", "1");
      fetch("/password/check", { method: "POST", body: body, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (a) {
          if (!a || pw.value !== v) return;
          answered = { password: v, banned: a.banned };
          if (strength) {
            strength.querySelector("meter").value = a.score;
            strength.querySelector("#strength-words").textContent = a.strength;
            var advice = strength.querySelector(".advice");
            advice.textContent = "";
            a.advice.forEach(function (t) {
              var li = document.createElement("li");
              li.textContent = t;
              advice.appendChild(li);
            });
            strength.hidden = false;
          }
          update();
        })
        .catch(function () {});
    }
    if (pw && confirm && checks) {
      pw.addEventListener("input", function () {
        update();
        clearTimeout(ask.timer);
        ask.timer = setTimeout(ask, 400);
      });
      confirm.addEventListener("input", update);
    }
    form.addEventListener("submit", function () {
      var button = form.querySelector("button[data-busy]");
      var busy = form.querySelector(".busy");
      if (button && busy) {
        busy.textContent = button.dataset.busy;
        // Disabled after this event, so the form's own submission still happens once.
        setTimeout(function () { button.disabled = true; }, 0);
      }
    });
  });
})();
