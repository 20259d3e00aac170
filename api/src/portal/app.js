// The user portal: password and key login, passwordless login, and the Security page.
// Ceremonies go through the browser's own navigator.credentials, with the JSON helpers of
// PublicKeyCredential, so the server's options are used as they come.
"use strict";

const $ = (selector) => document.querySelector(selector);
let token = sessionStorage.getItem("keyledger-token");

function say(text) {
  $("#message").textContent = text;
}

function show(page) {
  for (const section of document.querySelectorAll("section")) {
    section.hidden = section.id !== page;
  }
  document.body.dataset.page = page;
}

async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = "Bearer " + token;
  const response = await fetch("/api/v1" + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let json = null;
  try { json = await response.json(); } catch (_) { json = null; }
  return { status: response.status, json };
}

function signedIn(sessionToken) {
  token = sessionToken;
  sessionStorage.setItem("keyledger-token", token);
  say("");
  return refresh();
}

async function secondFactor(mfaToken) {
  const begin = await api("POST", "/login/mfa/webauthn/begin", { mfa_token: mfaToken });
  if (begin.status !== 200) return say("Your key cannot be used: " + (begin.json && begin.json.code));
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(begin.json.options.publicKey);
  const credential = await navigator.credentials.get({ publicKey });
  const finish = await api("POST", "/login/mfa/webauthn/finish", {
    mfa_token: mfaToken,
    ceremony_id: begin.json.ceremony_id,
    credential: credential.toJSON(),
  });
  if (finish.status !== 200) return say("Your key was not accepted.");
  return signedIn(finish.json.token);
}

let pendingMfa = null;

// The second step with a code from the authenticator app.
async function totpLogin(event) {
  event.preventDefault();
  const finish = await api("POST", "/login/mfa/totp", {
    mfa_token: pendingMfa,
    code: $("#totp-code").value.trim(),
  });
  $("#totp-code").value = "";
  if (finish.status !== 200) return say("The code was not accepted.");
  pendingMfa = null;
  return signedIn(finish.json.token);
}

async function login(event) {
  event.preventDefault();
  say("Signing in…");
  token = null;
  const answer = await api("POST", "/login", {
    username: $("#username").value,
    password: $("#password").value,
  });
  if (answer.status !== 200) return say("Sign-in failed.");
  if (answer.json.status === "authenticated") return signedIn(answer.json.token);
  if (answer.json.status === "mfa_required") {
    const factors = answer.json.factors;
    if (factors.includes("totp")) {
      pendingMfa = answer.json.mfa_token;
      $("#use-key").hidden = !factors.includes("webauthn");
      say("");
      return show("totp-page");
    }
    return secondFactor(answer.json.mfa_token);
  }
  return say("You must register a security key first; ask your administrator.");
}

async function passkeyLogin() {
  say("Signing in with a passkey…");
  const begin = await api("POST", "/login/passkey/begin", {});
  if (begin.status !== 200) return say("Passkey sign-in is not available.");
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(begin.json.options.publicKey);
  const credential = await navigator.credentials.get({ publicKey });
  const finish = await api("POST", "/login/passkey/finish", {
    ceremony_id: begin.json.ceremony_id,
    credential: credential.toJSON(),
  });
  if (finish.status !== 200) return say("Your passkey was not accepted.");
  return signedIn(finish.json.token);
}

function cell(row, text, asCode) {
  const td = document.createElement("td");
  if (asCode) {
    const code = document.createElement("code");
    code.textContent = text;
    td.append(code);
  } else {
    td.textContent = text;
  }
  row.append(td);
  return td;
}

async function refresh() {
  const list = await api("GET", "/me/credentials");
  if (list.status === 401) {
    token = null;
    sessionStorage.removeItem("keyledger-token");
    return show("login-page");
  }
  show("security-page");
  const mfa = await api("GET", "/me/mfa");
  const totpOn = mfa.status === 200 && mfa.json.totp_enrolled;
  $("#totp-status").textContent = totpOn ? "On" : "Off";
  $("#totp-setup").hidden = totpOn;
  $("#totp-remove").hidden = !totpOn;
  if (totpOn) $("#totp-enrollment").hidden = true;
  $("#key-status").textContent = list.json.status === "active_keys" ? "Active keys" : "No security keys";
  const body = $("#keys");
  body.replaceChildren();
  for (const key of list.json.items) {
    const row = document.createElement("tr");
    row.dataset.credentialId = key.credential_id;
    const label = document.createElement("input");
    label.className = "label";
    label.value = key.label;
    row.append(Object.assign(document.createElement("td"), {}));
    row.lastChild.append(label);
    cell(row, key.kind === "security_key" ? "Security key"
      : key.kind === "device_authenticator" ? "This device" : "Legacy U2F key");
    cell(row, key.credential_id, true);
    cell(row, key.registered_by === "admin" ? "an administrator" : "you");
    const actions = cell(row, "");
    const rename = Object.assign(document.createElement("button"), { textContent: "Rename", className: "rename" });
    rename.onclick = () => renameKey(key.credential_id, label.value);
    const remove = Object.assign(document.createElement("button"), { textContent: "Delete", className: "delete" });
    remove.onclick = () => deleteKey(key.credential_id);
    actions.append(rename, remove);
    body.append(row);
  }
}

async function addKey(event) {
  event.preventDefault();
  say("Follow your browser's prompt…");
  const begin = await api("POST", "/me/credentials/register/begin", { kind: $("#new-kind").value });
  if (begin.status !== 200) return say("Keys cannot be added: " + (begin.json && begin.json.code));
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(begin.json.options.publicKey);
  const credential = await navigator.credentials.create({ publicKey });
  const finish = await api("POST", "/me/credentials/register/finish", {
    ceremony_id: begin.json.ceremony_id,
    label: $("#new-label").value,
    credential: credential.toJSON(),
  });
  if (finish.status !== 201) return say("The key was not added: " + (finish.json && finish.json.code));
  say("Key added.");
  return refresh();
}

async function renameKey(id, label) {
  const answer = await api("PATCH", "/me/credentials/" + encodeURIComponent(id), { label });
  say(answer.status === 200 ? "Renamed." : "Not renamed: " + (answer.json && answer.json.code));
  return refresh();
}

async function deleteKey(id) {
  const confirm = $("#confirm-lockout").checked ? "?confirm_lockout=true" : "";
  const answer = await api("DELETE", "/me/credentials/" + encodeURIComponent(id) + confirm);
  if (answer.status === 409) return say("This is your last key and a second factor is required: tick the box to remove it anyway.");
  say(answer.status === 200 ? "Deleted." : "Not deleted: " + (answer.json && answer.json.code));
  return refresh();
}

async function setUpTotp() {
  const begin = await api("POST", "/me/totp");
  if (begin.status !== 200) return say("An authenticator app cannot be set up: " + (begin.json && begin.json.code));
  $("#totp-secret").textContent = begin.json.secret;
  $("#totp-uri").textContent = begin.json.otpauth_uri;
  $("#totp-uri").href = begin.json.otpauth_uri;
  $("#totp-enrollment").hidden = false;
  say("Enter the code your app shows to turn it on.");
}

async function confirmTotp(event) {
  event.preventDefault();
  const answer = await api("POST", "/me/totp/confirm", { code: $("#totp-confirm-code").value.trim() });
  $("#totp-confirm-code").value = "";
  if (answer.status !== 200) return say("The code was not accepted: " + (answer.json && answer.json.code));
  // The secret is shown once: it leaves the page as soon as the app is on.
  $("#totp-secret").textContent = "";
  $("#totp-uri").textContent = "";
  $("#totp-uri").removeAttribute("href");
  $("#totp-enrollment").hidden = true;
  say("Authenticator app added.");
  return refresh();
}

async function removeTotp() {
  const confirm = $("#confirm-lockout").checked ? "?confirm_lockout=true" : "";
  const answer = await api("DELETE", "/me/totp" + confirm);
  if (answer.status === 409) return say("This is your last factor and a second factor is required: tick the box to remove it anyway.");
  say(answer.status === 200 ? "Authenticator app removed." : "Not removed: " + (answer.json && answer.json.code));
  return refresh();
}

async function logout() {
  await api("POST", "/logout");
  token = null;
  sessionStorage.removeItem("keyledger-token");
  show("login-page");
}

function guarded(action) {
  return (event) => action(event).catch((error) => say("Error: " + error.name + ": " + error.message));
}

$("#login-form").addEventListener("submit", guarded(login));
$("#passkey-login").addEventListener("click", guarded(passkeyLogin));
$("#add-form").addEventListener("submit", guarded(addKey));
$("#logout").addEventListener("click", guarded(logout));
$("#totp-login-form").addEventListener("submit", guarded(totpLogin));
$("#use-key").addEventListener("click", guarded(() => secondFactor(pendingMfa)));
$("#totp-setup").addEventListener("click", guarded(setUpTotp));
$("#totp-confirm-form").addEventListener("submit", guarded(confirmTotp));
$("#totp-remove").addEventListener("click", guarded(removeTotp));
if (token) refresh(); else show("login-page");
