// SPDX-License-Identifier: Apache-2.0
// The discovery page's try-it form: call any method with JSON parameters, show the result or fault.
"use strict";

(() => {
  const form = document.getElementById("try");
  const method = document.getElementById("try-method");
  const params = document.getElementById("try-params");
  const out = document.getElementById("try-result");

  function show(text, failed) {
    out.hidden = false;
    out.className = "mono hash notice " + (failed ? "error" : "ok");
    out.textContent = text;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let args;
    try {
      args = params.value.trim() ? JSON.parse(params.value) : [];
    } catch (e) {
      show("The parameters are not valid JSON: " + e.message, true);
      return;
    }
    if (typeof args !== "object" || args === null) {
      show("Parameters must be a JSON array, or an object for parameters by name.", true);
      return;
    }
    try {
      show(JSON.stringify(await Clarens.call(method.value, args), null, 2), false);
    } catch (err) {
      show("Fault " + err.code + ": " + err.message, true);
    }
  });

  for (const button of document.querySelectorAll("button.try")) {
    button.addEventListener("click", () => {
      method.value = button.dataset.method;
      form.scrollIntoView({behavior: "smooth"});
      params.focus();
    });
  }
})();
