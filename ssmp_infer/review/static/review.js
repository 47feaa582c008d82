// The review page: draws /api/state, sends one small JSON request per click. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let state = null;

async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || `${path}: HTTP ${response.status}`);
  return answer;
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function thumb(shot) {
  const img = document.createElement("img");
  img.src = `/thumbs/shot_${String(shot).padStart(5, "0")}.jpg`;
  img.alt = `shot ${shot}`;
  img.loading = "lazy";
  return img;
}

function seconds(s) { return `${s.toFixed(2)} s`; }

function timecode(s, fps) {
  const frames = Math.round(s * fps), rate = Math.round(fps);
  const pad = (n) => String(n).padStart(2, "0");
  const f = frames % rate, total = Math.floor(frames / rate);
  return `${pad(Math.floor(total / 3600))}:${pad(Math.floor(total / 60) % 60)}:${pad(total % 60)}:${pad(f)}`;
}

function draw(next) {
  state = next;
  const pins = state.edits.pins, bans = new Set(state.edits.bans);
  $("title").textContent = `${state.title}: review`;
  $("length").value = state.edits.length;
  $("seed").value = state.edits.seed;
  $("run-flags").textContent = "ssmp-infer run " + state.run_flags.join(" ");
  $("trailer-summary").textContent =
    `${state.slots.length} shots` + (state.duration ? `, ${seconds(state.duration)}` : "");
  $("movie-summary").textContent = `${state.shots.length} shots, ${bans.size} banned`;

  const strip = $("trailer");
  strip.replaceChildren();
  for (const slot of state.slots) {
    const li = document.createElement("li");
    li.className = "slot" + (String(slot.slot) in pins ? " pinned" : "");
    li.dataset.slot = slot.slot;
    li.dataset.shot = slot.shot;
    li.title = String(slot.slot) in pins ? "pinned: click to un-pin" : "click to pin this shot to this slot";
    li.append(thumb(slot.shot));
    const label = document.createElement("div");
    label.className = "label";
    label.innerHTML = `${slot.slot + 1}. shot ${slot.shot} <span class="pin-mark">pinned</span>`;
    const time = document.createElement("div");
    time.className = "time";
    time.textContent = `${timecode(slot.source_start_s, state.fps)}  ${seconds(slot.source_end_s - slot.source_start_s)}`;
    li.append(label, time);
    li.addEventListener("click", () => act("/api/pin", {slot: slot.slot}));
    strip.append(li);
  }

  const taken = new Map(state.slots.map((s) => [s.shot, s.slot]));
  const grid = $("shots");
  grid.replaceChildren();
  for (const shot of state.shots) {
    const fig = document.createElement("figure");
    fig.className = "shot" + (taken.has(shot.shot) ? " taken" : "") + (bans.has(shot.shot) ? " banned" : "");
    fig.dataset.shot = shot.shot;
    fig.style.margin = "0";
    fig.title = bans.has(shot.shot) ? "banned: click to lift the ban" : "click to ban this shot";
    fig.append(thumb(shot.shot));
    if (taken.has(shot.shot)) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = taken.get(shot.shot) + 1;
      fig.append(badge);
    }
    const label = document.createElement("figcaption");
    label.className = "label";
    label.textContent = `${shot.shot} · ${seconds(shot.seconds)}`;
    fig.append(label);
    fig.addEventListener("click", () => act("/api/ban", {shot: shot.shot}));
    grid.append(fig);
  }

  const media = `?v=${state.version}`;
  if ($("player").dataset.version !== String(state.version)) {
    $("player").dataset.version = state.version;
    $("player").src = "/trailer.mp4" + media;
    $("sheet").src = "/trailer.png" + media;
  }
}

async function act(path, body, busyText) {
  const buttons = document.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  if (busyText) say(busyText);
  try {
    const next = await api(path, body);
    draw(next);
    return next;
  } catch (error) {
    say(error.message, true);
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

async function regenerate() {
  const length = Number($("length").value), seed = Number($("seed").value);
  if (length !== state.edits.length || seed !== state.edits.seed) {
    if (!(await act("/api/options", {length, seed}))) return;
  }
  const next = await act("/api/regenerate", {}, "Regenerating…");
  if (next) say(`Regenerated: the engine took ${next.timing.engine_ms} ms, the files ${next.timing.write_s} s.`);
}

async function candidates() {
  const count = Number($("candidate-count").value);
  say("Asking for candidates…");
  try {
    const answer = await api("/api/candidates", {count});
    const list = $("candidate-list");
    list.replaceChildren();
    for (const c of answer.candidates) {
      const box = document.createElement("div");
      box.className = "candidate";
      box.dataset.seed = c.seed;
      const head = document.createElement("div");
      head.textContent = `seed ${c.seed} · mean confidence ${c.mean_confidence.toFixed(3)}`;
      const shots = document.createElement("ol");
      for (const shot of c.shots) {
        const li = document.createElement("li");
        li.append(thumb(shot), `${shot}`);
        shots.append(li);
      }
      const use = document.createElement("button");
      use.type = "button";
      use.textContent = "Use this one";
      use.addEventListener("click", async () => {
        $("seed").value = c.seed;
        await regenerate();
      });
      box.append(head, shots, use);
      list.append(box);
    }
    $("candidate-view").hidden = false;
    say(`${answer.candidates.length} candidates, most confident first.`);
  } catch (error) {
    say(error.message, true);
  }
}

$("regenerate").addEventListener("click", regenerate);
$("candidates").addEventListener("click", candidates);
api("/api/state").then((s) => { draw(s); say("Ready."); }).catch((e) => say(e.message, true));
