// On every page: after an error, focus moves to its message, so that a screen reader reads it
// and a keyboard starts there; a form marked for it gets its first field focused instead.
"use strict";
(function () {
  var alert = document.querySelector(".alert.error[role=alert]");
  if (alert) {
    alert.setAttribute("tabindex", "-1");
    alert.focus();
    return;
  }
  var form = document.querySelector("form[data-first-field]");
  var first = form && form.querySelector("input:not([type=hidden]):not([hidden])");
  if (first) first.focus();
})();
