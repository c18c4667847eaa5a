// Passkeys: the forms marked `data-passkey` ("create" or "get") ask the browser's WebAuthn for
// a passkey, put its answer (as JSON) in the form's `credential` field and send the form. The
// options come in `data-options`, or from a POST to `data-options-url`. Without scripts or
// WebAuthn, those forms (and choices marked `data-passkey-only`) stay hidden, and what is
// marked `data-passkey-none` says why; everything else on the page works as before.
"use strict";
(function () {
  if (!window.PublicKeyCredential || !navigator.credentials || !window.fetch) return;

  function bytes(s) {
    var b64 = s.replace(/-/g, "+").replace(/_/g, "/");
    var bin = atob(b64 + "===".slice((b64.length + 3) % 4));
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function text(buf) {
    var b = new Uint8Array(buf), s = "";
    for (var i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function withIds(list) {
    return (list || []).map(function (c) { return Object.assign({}, c, { id: bytes(c.id) }); });
  }
  // The JSON forms of the options and of the answer (WebAuthn Level 3), where the browser
  // does not convert them itself.
  function creation(o) {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) return PublicKeyCredential.parseCreationOptionsFromJSON(o);
    return Object.assign({}, o, {
      challenge: bytes(o.challenge),
      user: Object.assign({}, o.user, { id: bytes(o.user.id) }),
      excludeCredentials: withIds(o.excludeCredentials)
    });
  }
  function request(o) {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) return PublicKeyCredential.parseRequestOptionsFromJSON(o);
    return Object.assign({}, o, { challenge: bytes(o.challenge), allowCredentials: withIds(o.allowCredentials) });
  }
  function answer(c) {
    if (typeof c.toJSON === "function") return c.toJSON();
    var r = c.response, out = {
      id: c.id, rawId: text(c.rawId), type: c.type,
      authenticatorAttachment: c.authenticatorAttachment || null,
      clientExtensionResults: c.getClientExtensionResults ? c.getClientExtensionResults() : {},
      response: { clientDataJSON: text(r.clientDataJSON) }
    };
    if (r.attestationObject) {
      out.response.attestationObject = text(r.attestationObject);
      out.response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      out.response.authenticatorData = text(r.authenticatorData);
      out.response.signature = text(r.signature);
      out.response.userHandle = r.userHandle ? text(r.userHandle) : null;
    }
    return out;
  }
  function options(source, form) {
    if (source.dataset.options) return Promise.resolve(JSON.parse(source.dataset.options));
    var body = new URLSearchParams();
    body.set("csrf", form.querySelector("input[name=csrf]").value);
    return fetch(source.dataset.optionsUrl, { method: "POST", body: body, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("options: " + r.status); return r.json(); });
  }
  // Asks the browser for a passkey (made, or used) with the options `source` names, puts its
  // answer in the form's `credential` field and sends the form.
  function run(source, form, kind, status) {
    if (status) status.textContent = "";
    // Whether to reset or unlock, as chosen on the page, goes with a passkey used there.
    var intent = form.querySelector("input[type=hidden][name=intent]");
    var chosen = document.querySelector("input[type=radio][name=intent]:checked");
    if (intent && chosen) intent.value = chosen.value;
    return options(source, form).then(function (o) {
      return kind === "create"
        ? navigator.credentials.create({ publicKey: creation(o) })
        : navigator.credentials.get({ publicKey: request(o) });
    }).then(function (c) {
      form.querySelector("input[name=credential]").value = JSON.stringify(answer(c));
      form.submit();
    }).catch(function (e) {
      if (status) status.textContent = status.dataset.failed || "";
      throw e;
    });
  }

  document.querySelectorAll("[data-passkey-none]").forEach(function (e) { e.hidden = true; });
  document.querySelectorAll("[data-passkey-only]").forEach(function (e) { e.hidden = false; });
  // A form that is all about a passkey: sending it asks for one.
  document.querySelectorAll("form[data-passkey]").forEach(function (form) {
    form.hidden = false;
    var busy = false;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (busy || (form.reportValidity && !form.reportValidity())) return;
      busy = true;
      run(form, form, form.dataset.passkey, form.querySelector("[data-passkey-status]"))
        .catch(function () { busy = false; });
    });
  });
  // A button that uses a passkey in place of a field of its form (`data-skips`: that field's id).
  document.querySelectorAll("button[data-passkey-button]").forEach(function (button) {
    var form = button.form, busy = false;
    button.addEventListener("click", function () {
      var skipped = button.dataset.skips && document.getElementById(button.dataset.skips);
      if (skipped) skipped.required = false;
      if (busy || (form.reportValidity && !form.reportValidity())) {
        if (skipped) skipped.required = true;
        return;
      }
      busy = true;
      run(button, form, "get", button.parentNode.querySelector("[data-passkey-status]"))
        .catch(function () { busy = false; if (skipped) skipped.required = true; });
    });
  });
})();
