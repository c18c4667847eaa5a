// Copy buttons beside secrets shown once (a temporary password, new staff credentials, an
// authenticator key): shown only where the browser can copy, so without this script nothing
// appears that does not work. The key of an authenticator is copied without its spaces.
"use strict";
(function () {
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.dataset.copy);
    if (!source || !navigator.clipboard) return;
    button.hidden = false;
    var label = button.textContent;
    button.addEventListener("click", function () {
      var text = source.textContent.trim();
      if (button.dataset.compact) text = text.replace(/\s+/g, "");
      navigator.clipboard.writeText(text).then(function () {
        button.textContent = button.dataset.done;
        setTimeout(function () { button.textContent = label; }, 3000);
      }).catch(function () {
        // Not allowed here (a frame without the right, say): the text stays to select by hand.
        button.hidden = true;
      });
    });
  });
})();
