// Progressive enhancement for new-password forms: live checks of length, complexity and
// confirmation as the person types, and a "writing…" notice while the directory answers.
// The server decides; without this script the forms work the same.
"use strict";
(function () {
  function complex(pw) {
    var kinds = 0;
    if (/[A-Z]/.test(pw)) kinds++;
    if (/[a-z]/.test(pw)) kinds++;
    if (/[0-9]/.test(pw)) kinds++;
    if (/[^A-Za-z0-9]/.test(pw)) kinds++;
    return kinds >= 3;
  }
  document.querySelectorAll("form.new-password").forEach(function (form) {
    // The person's time zone, so that a refusal can say "from 5 December at 10:30" in it.
    var tz = form.querySelector("input[name=tz_offset]");
    if (tz) tz.value = String(-new Date().getTimezoneOffset());
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
