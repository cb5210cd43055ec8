// WebAuthn ceremonies for the sign-in step and the security keys page.
//
// Loaded as a file because the pages' CSP runs no inline script. A form marked
// data-webauthn="get" finds its options in a JSON data block (named by data-options);
// one marked data-webauthn="create" fetches them from data-options-url with the form's
// fields. The browser's answer goes, as JSON, into the form's hidden "credential" field
// and the form is posted as usual. Submit buttons stay disabled until this script runs.
(function () {
  "use strict";

  function toBytes(base64url) {
    const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  }

  function toBase64url(buffer) {
    let binary = "";
    for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map((c) => ({ ...c, id: toBytes(c.id) }));
  }

  function creationOptions(json) {
    return {
      ...json,
      challenge: toBytes(json.challenge),
      user: { ...json.user, id: toBytes(json.user.id) },
      excludeCredentials: descriptors(json.excludeCredentials),
    };
  }

  function requestOptions(json) {
    return { ...json, challenge: toBytes(json.challenge), allowCredentials: descriptors(json.allowCredentials) };
  }

  // The JSON forms of WebAuthn Level 3 (RegistrationResponseJSON, AuthenticationResponseJSON).
  function credentialJSON(credential) {
    const r = credential.response;
    const response = { clientDataJSON: toBase64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toBase64url(r.attestationObject);
      response.transports = typeof r.getTransports === "function" ? r.getTransports() : [];
    } else {
      response.authenticatorData = toBase64url(r.authenticatorData);
      response.signature = toBase64url(r.signature);
      response.userHandle = r.userHandle ? toBase64url(r.userHandle) : null;
    }
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: response,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
    };
  }

  // Messages come translated from the page (data-msg-* on the status element), English otherwise.
  function text(form, name, english) {
    const status = form.querySelector("[data-webauthn-status]");
    return (status && status.dataset[name]) || english;
  }

  function say(form, message) {
    const status = form.querySelector("[data-webauthn-status]");
    if (status) {
      status.textContent = message;
      status.hidden = false;
    }
  }

  async function options(form) {
    if (form.dataset.webauthn === "get") {
      return requestOptions(JSON.parse(document.getElementById(form.dataset.options).textContent));
    }
    const answer = await fetch(form.dataset.optionsUrl, {
      method: "POST", body: new FormData(form), credentials: "same-origin", headers: { Accept: "application/json" },
    });
    const json = await answer.json();
    if (!answer.ok) throw new Error(json.message || text(form, "msgRefused", "The request was refused."));
    return creationOptions(json);
  }

  async function ceremony(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const publicKey = await options(form);
      const credential = form.dataset.webauthn === "get"
        ? await navigator.credentials.get({ publicKey })
        : await navigator.credentials.create({ publicKey });
      form.elements.credential.value = JSON.stringify(credentialJSON(credential));
      HTMLFormElement.prototype.submit.call(form);
    } catch (error) {
      button.disabled = false;
      say(form, error && error.name === "NotAllowedError"
        ? text(form, "msgCancelled", "The request was cancelled or timed out. Try again, or choose another method.")
        : error && error.name === "InvalidStateError"
          ? text(form, "msgRegistered", "This authenticator is already registered.")
          : (error && error.message) || text(form, "msgFailed", "Something went wrong. Try again."));
    }
  }

  for (const form of document.querySelectorAll("form[data-webauthn]")) {
    const button = form.querySelector("button[type=submit]");
    if (!window.PublicKeyCredential) {
      say(form, text(form, "msgUnsupported", "This browser cannot use security keys or passkeys."));
      continue;
    }
    form.addEventListener("submit", ceremony);
    button.disabled = false;
  }
  document.documentElement.dataset.webauthnReady = "true";
})();
