// SPDX-License-Identifier: Apache-2.0
// The burner page: who you are, images (upload, delete), drives (eject), the burn form, and
// your jobs with live progress, polled once a second with one JSON-RPC batch.
"use strict";

(() => {
  const {call, batch, el, say, fail, bytes, when, describe} = Clarens;
  const $ = (id) => document.getElementById(id);
  const ACTIVE = new Set(["queued", "burning", "verifying"]);
  const base = Clarens.endpoint.replace(/\/$/, "");   // absolute, without credentials
  // What the page offers, by the burner.* name each needs: the policy lets the caller do some of them
  // (system.mayCall says which); the page offers nothing else, and says why instead of showing refusals.
  const ACTIONS = ["images", "drives", "jobs", "burn", "upload", "cancel", "eject", "delete_image"];
  let may = new Set(ACTIONS);
  let me = null;
  let pollError = null;

  // Why a part of the page is empty: the caller may not see it.
  function notAllowed(what) {
    return el("li", {class: "empty"}, me && me.authenticated ? "Your account may not see the " + what + "."
                                                          : "Sign in to see the " + what + ".");
  }

  function setOptions(select, values, empty) {
    const keep = select.value;
    select.replaceChildren(...(values.length ? values.map((v) => el("option", {value: v}, v))
                                             : [el("option", {value: ""}, empty)]));
    if (values.includes(keep)) select.value = keep;
  }

  // -- who you are -------------------------------------------------------------
  async function showIdentity() {
    try {
      me = await call("system.whoami");
      const allowed = await call("system.mayCall", [ACTIONS.map((name) => "burner." + name)]);
      may = new Set(ACTIONS.filter((name) => allowed["burner." + name]));
    } catch (err) {
      $("whoami").textContent = "identity unknown";
      return fail(err);
    }
    // Signing out is a form (a state change, under the cross-site checks); a certificate has nothing to sign out of.
    const signOut = me.session ? el("form", {class: "signout", method: "post", action: base + "/logout?to=burner"},
                                    el("button", {type: "submit", class: "secondary", id: "signout"}, "Sign out"))
                               : null;
    $("whoami").replaceChildren(me.authenticated
      ? el("span", {}, "Signed in as ", el("b", {}, me.identity), " (" + me.source +
           (me.groups.length ? "; " + me.groups.join(", ") : "") + ")", signOut)
      : el("span", {}, "Not signed in (anonymous) · ", el("a", {href: base + "/login?to=burner"}, "Sign in")));
    $("signin").hidden = me.authenticated;
  }

  // -- images --------------------------------------------------------------------
  function renderImages(images) {
    setOptions($("burn-image"), images.map((i) => i.name), "(no images yet)");
    $("images").replaceChildren(...(images.length ? images.map((image) =>
      el("li", {class: "image"},
        el("div", {class: "head"},
          el("span", {class: "title"}, image.name),
          el("span", {class: "muted small"}, bytes(image.size)),
          el("button", {type: "button", class: "danger", disabled: !may.has("delete_image"),
                        onclick: () => removeImage(image.name)}, "Delete")),
        el("dl", {class: "kv small"},
          el("dt", {}, "SHA-256"), el("dd", {class: "mono hash"}, image.hashing
            ? "being computed (" + image.hashing.percent + "%)" : image.sha256),
          el("dt", {}, "Uploaded"), el("dd", {}, when(image.uploaded) +
                                            (image.uploaded_by ? " by " + image.uploaded_by : "")))))
      : [el("li", {class: "empty"}, "No images yet: upload an ISO image above.")]));
  }

  async function loadImages() {
    if (!may.has("images")) {
      setOptions($("burn-image"), [], "(no images)");
      return $("images").replaceChildren(notAllowed("images"));
    }
    try { renderImages(await call("burner.images")); } catch (err) { fail(err); renderImages([]); }
  }

  async function removeImage(name) {
    if (!confirm("Delete the image " + name + "?")) return;
    try {
      await call("burner.delete_image", [name]);
      say("Deleted " + name, "ok");
      loadImages();
    } catch (err) { fail(err); }
  }

  // -- uploads: resumable (choose the same file again to continue), with rate and time left --
  const RETRIES = 5;

  function duration(seconds) {
    seconds = Math.round(seconds);
    const h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + String(s).padStart(2, "0");
  }

  // The rate over the last few seconds, so that it follows a transfer whose speed changes.
  function rateMeter() {
    const samples = [];
    return (done) => {
      const now = performance.now() / 1000;
      samples.push([now, done]);
      while (samples.length > 2 && now - samples[1][0] > 5) samples.shift();
      const [t0, d0] = samples[0];
      return now > t0 ? (done - d0) / (now - t0) : 0;
    };
  }

  async function uploadAnswer(response) {
    let body = {};
    try { body = await response.json(); } catch (e) { /* not ours: Apache's own page */ }
    if (response.ok) return body;
    const error = body.error || {code: response.status, message: "HTTP " + response.status};
    throw Object.assign(new Error(error.message), {code: error.code, status: response.status,
                                                   offset: response.headers.get("Upload-Offset")});
  }

  // How much of the file the server holds already; every refusal (too large, no space,
  // name taken, not allowed...) comes here, before a byte of the file is sent.
  async function held(url, file) {
    const response = await fetch(url, {method: "PUT", credentials: "same-origin",
                                       headers: {"Content-Range": "bytes */" + file.size}});
    return (await uploadAnswer(response)).upload.received;
  }

  // Send the file from byte `from`: resolves with the server's answer, rejects with
  // {network: true} when the connection fails (so the caller resumes).
  function send(url, file, from, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", url);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.setRequestHeader("Content-Range", "bytes " + from + "-" + (file.size - 1) + "/" + file.size);
      xhr.upload.addEventListener("progress", (e) => onProgress(from + e.loaded));
      xhr.addEventListener("load", () => {
        let body = {};
        try { body = JSON.parse(xhr.responseText || "{}"); } catch (e) { /* Apache's own page */ }
        if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
        const error = body.error || {code: xhr.status, message: "HTTP " + xhr.status};
        reject(Object.assign(new Error(error.message), {code: error.code, status: xhr.status,
                                                        offset: xhr.getResponseHeader("Upload-Offset")}));
      });
      xhr.addEventListener("error", () => reject(Object.assign(new Error("the connection failed"), {network: true})));
      xhr.send(file.slice(from));
    });
  }

  async function upload(event) {
    event.preventDefault();
    const file = $("upload-file").files[0];
    if (!file) return say("Choose an ISO image to upload first.", "info");
    const bar = $("upload-progress"), status = $("upload-status"), button = $("upload-button");
    const url = base + "/images/" + encodeURIComponent(file.name);
    const rate = rateMeter();
    const show = (done) => {
      const speed = rate(done);
      bar.value = file.size ? Math.floor(1000 * done / file.size) / 10 : 100;
      status.textContent = bar.value.toFixed(1) + "% of " + bytes(file.size) +
        (speed > 0 ? " · " + bytes(Math.round(speed)) + "/s · " + duration((file.size - done) / speed) + " left" : "");
    };
    button.disabled = true;
    bar.hidden = false;
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          const from = await held(url, file);
          if (from > 0) say("Resuming the upload of " + file.name + " at " + bytes(from), "info");
          show(from);
          const answer = await send(url, file, from, show);
          if (answer.image) {
            say("Uploaded " + answer.image.name + " (" + bytes(answer.image.size) + ")", "ok");
            $("upload").reset();
            loadImages();
            return;
          }
        } catch (err) {
          // Worth another try: the connection failed; our last attempt is still winding up on the
          // server; or the server holds more than we thought (the browser itself may have resent
          // the request from the start after a dropped connection).
          const again = err.status === 409 && (/in progress/.test(err.message) || err.offset !== null);
          if (!(err.network || err instanceof TypeError || again) || attempt >= RETRIES) throw err;
          status.textContent = "connection lost; resuming in a moment…";
          await new Promise((resume) => setTimeout(resume, Math.min(1000 * 2 ** attempt, 5000)));
        }
      }
    } catch (err) {
      say("Upload of " + file.name + " failed: " + (err.network || err instanceof TypeError
        ? "the connection failed; choose the same file again to resume" : describe(err)), "error");
    } finally {
      button.disabled = false;
      bar.hidden = true;
      status.textContent = "";
    }
  }

  // -- drives ----------------------------------------------------------------------
  function medium(drive) {
    if (drive.reachable === false) return "unreachable: " + (drive.error || "its host does not answer");
    const m = drive.medium || {};
    if (m.busy) return drive.current_job ? "in use by job " + drive.current_job : "in use";
    if ("present" in m) return m.present ? "disc present (" + bytes(m.size) + " written)" : "no disc";
    return m.status || "unknown medium";
  }

  let shownDrives = null;   // what the list shows: rebuilt only when it changes, so buttons keep focus

  function renderDrives(drives) {
    const key = JSON.stringify(drives);
    if (key === shownDrives) return;
    shownDrives = key;
    setOptions($("burn-drive"), drives.map((d) => d.name), "(no drives)");
    $("drives").replaceChildren(...(drives.length ? drives.map((drive) =>
      el("li", {class: "drive"},
        el("div", {class: "head"},
          el("b", {}, drive.name),
          el("span", {class: "badge" + (drive.busy ? " burning" : "")}, drive.busy ? "busy" : "idle"),
          el("button", {type: "button", class: "secondary", disabled: drive.busy || !may.has("eject"),
                        onclick: () => eject(drive.name)}, "Eject")),
        el("p", {class: "muted small"}, (drive.reachable === false ? "" : drive.kind + " · holds " +
           bytes(drive.capacity) + " · ") + medium(drive) +
           (drive.queued ? " · " + drive.queued + " queued" : ""))))
      : [el("li", {class: "empty"}, "No drives.")]));
  }

  async function eject(name) {
    try {
      const out = await call("burner.eject", [name]);
      say((out ? "Ejected the disc in " : "Ejecting the disc in ") + name, out ? "ok" : "info");
      poll();
    } catch (err) { fail(err); }
  }

  // -- jobs --------------------------------------------------------------------------
  function jobItem(job) {
    const progress = job.progress || {percent: 0, bytes: 0};
    const v = job.verification;
    const item = el("li", {class: "job", "data-job": job.id, "data-state": job.state},
      el("div", {class: "head"},
        el("span", {class: "title"}, "#" + job.id + " " + job.image),
        el("span", {class: "muted"}, "→ " + job.drive),
        el("span", {class: "badge " + job.state, "data-role": "state"}, job.state),
        ACTIVE.has(job.state) ? el("button", {type: "button", class: "danger", disabled: !may.has("cancel"),
                                              onclick: () => cancel(job.id)}, "Cancel") : null),
      el("progress", {max: 100, value: progress.percent, "aria-label": "progress of job " + job.id}),
      el("div", {class: "figures small muted"},
        el("span", {"data-role": "percent"}, progress.percent.toFixed(1) + "%"),
        el("span", {"data-role": "bytes"}, bytes(progress.bytes) + " of " + bytes(job.image_size)),
        el("span", {}, "submitted " + when(job.submitted) + (job.speed ? " · speed " + job.speed + "x" : ""))));
    if (v && v.disc_sha256) {
      item.append(el("dl", {class: "kv small"},
        el("dt", {}, "Image SHA-256"), el("dd", {class: "mono hash", "data-role": "image-sha"}, v.image_sha256),
        el("dt", {}, "Disc SHA-256"), el("dd", {class: "mono hash", "data-role": "disc-sha"}, v.disc_sha256),
        el("dt", {}, "Verified"), el("dd", {class: "verdict " + (v.match ? "ok" : "bad"), "data-role": "verdict"},
                                     v.match ? "✓ the disc matches the image" : "✗ the disc differs from the image")));
    } else if (job.state === "done" && !job.verify) {
      item.append(el("p", {class: "muted small"}, "Not verified (verification was off)."));
    }
    if (job.error) item.append(el("p", {class: "notice error small"}, job.error));
    return item;
  }

  // Items are updated in place while only the progress changes, so that the list does not
  // flicker and a button keeps its focus; an item is rebuilt when anything else changes.
  function renderJobs(jobs) {
    const list = $("jobs");
    // newest first; ids are numbers, or "HOST:N" on a drive host, so order by submission
    const sorted = jobs.slice().sort((a, b) => (b.submitted || 0) - (a.submitted || 0));
    if (!sorted.length) {
      list.replaceChildren(el("li", {class: "empty"}, "No jobs yet: burn an image above."));
      return;
    }
    const old = new Map([...list.querySelectorAll("li.job")].map((li) => [li.dataset.job, li]));
    const items = sorted.map((job) => {
      const key = JSON.stringify([job.state, job.verification, job.error]);
      const item = old.get(String(job.id));
      if (item && item.dataset.key === key) {
        const progress = job.progress || {percent: 0, bytes: 0};
        item.querySelector("progress").value = progress.percent;
        item.querySelector("[data-role=percent]").textContent = progress.percent.toFixed(1) + "%";
        item.querySelector("[data-role=bytes]").textContent = bytes(progress.bytes) + " of " + bytes(job.image_size);
        return item;
      }
      const fresh = jobItem(job);
      fresh.dataset.key = key;
      return fresh;
    });
    if (items.some((item, i) => list.children[i] !== item) || list.children.length !== items.length) {
      list.replaceChildren(...items);
    }
  }

  async function cancel(id) {
    try {
      await call("burner.cancel", [id]);
      say("Cancelled job " + id, "info");
      poll();
    } catch (err) { fail(err); }
  }

  async function burn(event) {
    event.preventDefault();
    const options = {verify: $("burn-verify").checked};
    if ($("burn-speed").value) options.speed = Number($("burn-speed").value);
    $("burn-button").disabled = true;
    try {
      const id = await call("burner.burn", [$("burn-image").value, $("burn-drive").value, options]);
      say("Job " + id + " started: burning " + $("burn-image").value, "info");
      poll();
    } catch (err) {
      fail(err);
    } finally {
      $("burn-button").disabled = false;
    }
  }

  // -- polling: never more than one request in flight; a poll asked for meanwhile follows it --
  let polling = null, pollAgain = false;

  function poll() {
    if (polling) {
      pollAgain = true;
      return polling;
    }
    polling = pollOnce().finally(() => {
      polling = null;
      if (pollAgain) {
        pollAgain = false;
        poll();
      }
    });
    return polling;
  }

  async function pollOnce() {
    const wanted = ["jobs", "drives"].filter((name) => may.has(name));
    if (!wanted.length) return;
    let results;
    try {
      results = await batch(wanted.map((name) => ["burner." + name]));
    } catch (err) {
      results = wanted.map(() => ({error: err}));
    }
    const [jobs, drives] = ["jobs", "drives"].map((name) => wanted.includes(name) ? results[wanted.indexOf(name)]
                                                                              : {result: null});
    if (jobs.result) renderJobs(jobs.result);
    if (drives.result) renderDrives(drives.result);
    const error = jobs.error || drives.error;
    // The session ended (signed out elsewhere, revoked, expired): the answer cleared its cookie; say who we are now.
    if (error && error.code === -32001 && me && me.session) showIdentity();
    const text = error ? describe(error) : null;
    if (text && text !== pollError) say(text, "error");   // once per distinct problem, not every second
    pollError = text;
    if (error && !jobs.result) $("jobs").replaceChildren(el("li", {class: "empty"}, "Jobs unavailable."));
    if (error && !drives.result) {
      shownDrives = null;
      $("drives").replaceChildren(el("li", {class: "empty"}, "Drives unavailable."));
      setOptions($("burn-drive"), [], "(unavailable)");
    }
  }

  // What the caller may not do is not offered (and the parts it may not see say so).
  function offer() {
    for (const id of ["burn-image", "burn-drive", "burn-speed", "burn-verify", "burn-button"]) {
      $(id).disabled = !may.has("burn");
    }
    $("upload-file").disabled = $("upload-button").disabled = !may.has("upload");
    if (!may.has("jobs")) $("jobs").replaceChildren(notAllowed("jobs"));
    if (!may.has("drives")) {
      $("drives").replaceChildren(notAllowed("drives"));
      setOptions($("burn-drive"), [], "(no drives)");
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    $("burn").addEventListener("submit", burn);
    $("upload").addEventListener("submit", upload);
    await showIdentity();
    offer();
    await loadImages();
    // One second after each poll ends: a slow server is never asked twice at once.
    const loop = () => poll().finally(() => setTimeout(loop, 1000));
    loop();
  });
})();
