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
    button.addEventListener("click", function () {
      var shown = input.type === "password";
      input.type = shown ? "text" : "password";
      button.setAttribute("aria-pressed", String(shown));
    });
    input.insertAdjacentElement("afterend", button);
    // Sent hidden again, so that browsers offer to save it as a password.
    if (input.form) input.form.addEventListener("submit", function () { input.type = "password"; });
  });
  function complex(pw) {
    var kinds = 0;
    if (/[A-Z]/.test(pw)) kinds++;
    if (/[a-z]/.test(pw)) kinds++;
    if (/[0-9]/.test(pw)) kinds++;
    if (/[^A-Za-z0-9]/.test(pw)) kinds++;
    return kinds >= 3;
  }
  document.querySelectorAll("form.new-password").forEach(function (form) {
    var pw = form.querySelector("input[name=password]");
    var confirm = form.querySelector("input[name=confirm]");
    var checks = form.querySelector(".checks");
    var min = parseInt(form.dataset.minLength || "0", 10);
    function update() {
      var v = pw.value;
      checks.hidden = v.length === 0;
      checks.querySelectorAll("li").forEach(function (li) {
        var ok = false;
        switch (li.dataset.check) {
          case "length": ok = Array.from(v).length >= min; break;
          case "complexity": ok = complex(v); break;
          case "match": ok = v.length > 0 && v === confirm.value; break;
        }
        li.classList.toggle("met", ok);
      });
    }
    if (pw && confirm && checks) {
      pw.addEventListener("input", update);
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
