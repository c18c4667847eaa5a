// Progressive enhancement for password forms: the person's time zone (so that times are said
// in it), live checks of length, complexity and confirmation as the person types, and a
// "writing…" notice while the directory answers. The server decides; without this script the
// forms work the same, and times are given in UTC.
"use strict";
(function () {
  document.querySelectorAll("input[name=tz_offset]").forEach(function (tz) {
    tz.value = String(-new Date().getTimezoneOffset());
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
