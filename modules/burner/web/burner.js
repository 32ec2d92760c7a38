// The burner page: who you are, images (upload, delete), drives (eject), the burn form, and
// your jobs with live progress, polled once a second with one JSON-RPC batch.
"use strict";

(() => {
  const {call, batch, el, say, fail, bytes, when, describe} = Clarens;
  const $ = (id) => document.getElementById(id);
  const ACTIVE = new Set(["queued", "burning", "verifying"]);
  const base = Clarens.endpoint.replace(/\/$/, "");   // absolute, without credentials
  let me = null;
  let pollError = null;

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
    } catch (err) {
      $("whoami").textContent = "identity unknown";
      return fail(err);
    }
    $("whoami").replaceChildren(me.authenticated
      ? el("span", {}, "Signed in as ", el("b", {}, me.identity), " (" + me.source +
           (me.groups.length ? "; " + me.groups.join(", ") : "") + ")")
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
          el("button", {type: "button", class: "danger", onclick: () => removeImage(image.name)}, "Delete")),
        el("dl", {class: "kv small"},
          el("dt", {}, "SHA-256"), el("dd", {class: "mono hash"}, image.sha256),
          el("dt", {}, "Uploaded"), el("dd", {}, when(image.uploaded) +
                                            (image.uploaded_by ? " by " + image.uploaded_by : "")))))
      : [el("li", {class: "empty"}, "No images yet: upload an ISO image above.")]));
  }

  async function loadImages() {
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

  function upload(event) {
    event.preventDefault();
    const file = $("upload-file").files[0];
    if (!file) return say("Choose an ISO image to upload first.", "info");
    const bar = $("upload-progress"), status = $("upload-status"), button = $("upload-button");
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", base + "/images/" + encodeURIComponent(file.name));
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) {
        bar.value = Math.round(100 * e.loaded / e.total);
        status.textContent = bar.value + "% of " + bytes(e.total);
      }
    });
    xhr.addEventListener("loadend", () => {
      button.disabled = false;
      bar.hidden = true;
      let body = {};
      try { body = JSON.parse(xhr.responseText || "{}"); } catch (e) { /* Apache's own page */ }
      if (xhr.status === 201) {
        status.textContent = "";
        say("Uploaded " + body.image.name + " (" + bytes(body.image.size) + ")", "ok");
        $("upload").reset();
        loadImages();
      } else {
        status.textContent = "";
        const error = body.error || {code: xhr.status, message: xhr.status ? "HTTP " + xhr.status : "upload interrupted"};
        say("Upload failed: " + describe(error), "error");
      }
    });
    button.disabled = true;
    bar.hidden = false;
    bar.value = 0;
    xhr.send(file);
  }

  // -- drives ----------------------------------------------------------------------
  function medium(drive) {
    const m = drive.medium || {};
    if (m.busy) return "in use";
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
          el("button", {type: "button", class: "secondary", disabled: drive.busy,
                        onclick: () => eject(drive.name)}, "Eject")),
        el("p", {class: "muted small"}, drive.kind + " · holds " + bytes(drive.capacity) + " · " + medium(drive) +
           (drive.queued ? " · " + drive.queued + " queued" : ""))))
      : [el("li", {class: "empty"}, "No drives.")]));
  }

  async function eject(name) {
    try {
      await call("burner.eject", [name]);
      say("Ejected the disc in " + name, "ok");
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
        ACTIVE.has(job.state) ? el("button", {type: "button", class: "danger",
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
    const sorted = jobs.slice().sort((a, b) => b.id - a.id);
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

  // -- polling -------------------------------------------------------------------------
  async function poll() {
    let results;
    try {
      results = await batch([["burner.jobs"], ["burner.drives"]]);
    } catch (err) {
      results = [{error: err}, {error: err}];
    }
    const [jobs, drives] = results;
    if (jobs.result) renderJobs(jobs.result);
    if (drives.result) renderDrives(drives.result);
    const error = jobs.error || drives.error;
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

  document.addEventListener("DOMContentLoaded", async () => {
    $("burn").addEventListener("submit", burn);
    $("upload").addEventListener("submit", upload);
    await showIdentity();
    await Promise.all([loadImages(), poll()]);
    setInterval(poll, 1000);
  });
})();
