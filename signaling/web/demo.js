// The demo call page at "/": also the reference example of using the SDK, so it stays plain
// JavaScript with no framework and no build step.
// URL parameters: ?room=NAME (or #NAME) to prefill, &name=, &token= (room token when the
// server needs one), &relay=1 (TURN only), &autojoin=1 (join at once).
import { join, isValidRoomId, ErrorCode } from "/otter.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const roomParam = params.get("room") ?? decodeURIComponent(location.hash.slice(1));
$("room").value = isValidRoomId(roomParam) ? roomParam : "";
$("name").value = params.get("name") ?? localStorage.getItem("otter-name") ?? "";
$("relay").checked = params.get("relay") === "1";

/** What a person reads for each error code: what happened and what to do. */
const MESSAGES = {
  [ErrorCode.BadJson]: "The call server did not understand this page (bad JSON). Reload the page.",
  [ErrorCode.BadMessage]: "The call server refused a message from this page. Reload the page.",
  [ErrorCode.UnknownType]: "This page and the call server do not speak the same version. Reload the page.",
  [ErrorCode.BadRoomId]: "Room names are 1 to 64 letters, digits, _ or -.",
  [ErrorCode.RoomFull]: "This room is full. Try again when someone leaves, or use another room.",
  [ErrorCode.AuthRequired]: "This call server needs an invitation link with a token. Ask for a new link.",
  [ErrorCode.AuthInvalid]: "The invitation link is not valid. Ask for a new one.",
  [ErrorCode.AuthExpired]: "The invitation link has expired. Ask for a new one.",
  [ErrorCode.AuthWrongRoom]: "The invitation link is for another room.",
  [ErrorCode.NotJoined]: "Not in the room any more. Join again.",
  [ErrorCode.AlreadyJoined]: "Already in a room on this connection. Reload the page.",
  [ErrorCode.UnknownPeer]: "That person is no longer in the call.",
  [ErrorCode.RateLimited]: "Too many messages too fast. Wait a moment.",
  [ErrorCode.TooLarge]: "That message is too large to send.",
  [ErrorCode.IdleTimeout]: "Disconnected after a long silence. Reconnecting…",
  [ErrorCode.JoinTimeout]: "The call server closed the connection before we joined. Try again.",
  [ErrorCode.ServerBusy]: "The call server is busy. Try again in a minute.",
  [ErrorCode.Unavailable]: "The call service is briefly unavailable. Retrying…",
  [ErrorCode.Internal]: "The call server had a problem. Try again.",
  [ErrorCode.SdkState]: "That cannot be done now (the call has ended).",
  [ErrorCode.SdkConnect]: "Cannot reach the call server. Check your internet connection and try again.",
  [ErrorCode.SdkProtocol]: "The call server sent something this page does not understand. Reload the page.",
  [ErrorCode.SdkNegotiation]: "Setting up the media with someone failed; retrying.",
  [ErrorCode.SdkFile]: "The file could not be sent.",
  [ErrorCode.SdkIce]: "Could not refresh the relay credentials; the call goes on with the old ones.",
  [ErrorCode.SdkMediaDenied]: "Camera or microphone blocked. Allow them for this site (the icon in the address bar), then reload. You can still join to watch and listen.",
  [ErrorCode.SdkMediaUnavailable]: "No camera or microphone found, or another app is using it. You can still join to watch and listen.",
  [ErrorCode.SdkTurnAuth]: "Cannot connect to {peer}: the relay server refused our credentials. The call service needs fixing.",
  [ErrorCode.SdkTurnUnreachable]: "Cannot connect to {peer}: the relay server does not answer. A firewall may block it.",
  [ErrorCode.SdkIceFailed]: "Cannot connect to {peer}: no network path between you. Try “Relay only”, or another network.",
};
const messageFor = (code, peer) => (MESSAGES[code] ?? `Something went wrong (${code}).`).replace("{peer}", peer ? who(peer) : "someone");

let call = null;
let preview = null; // the camera/microphone stream: previewed, then sent in the call
let screen = null; // the screen share track while sharing
const who = (peer) => peer.name || "Guest";
const status = (text) => { $("status").textContent = text; };

function notice(text, kind = "error") {
  $("notice").textContent = text;
  $("notice").className = kind;
  $("notice").hidden = !text;
}

function log(text, cls = "event") {
  const li = document.createElement("li");
  li.textContent = text;
  li.className = cls;
  $("log").append(li);
  li.scrollIntoView({ block: "nearest" });
  return li;
}

// -- pre-join: preview, microphone level, devices ----------------------------------------------

let meter = null;
function watchLevel(stream) {
  clearInterval(meter?.timer);
  meter?.ctx.close().catch(() => {});
  meter = null;
  const track = stream?.getAudioTracks()[0];
  if (!track || !window.AudioContext) return;
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 512;
  ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    const rms = Math.sqrt(samples.reduce((s, x) => s + x * x, 0) / samples.length);
    const level = Math.min(1, rms * 4);
    $("level").value = level;
    $("level").textContent = level.toFixed(2);
  }, 100);
  meter = { ctx, timer };
}

function fillSelect(select, devices, current, fallback) {
  select.replaceChildren(...devices.map((d, i) => new Option(d.label || `${fallback} ${i + 1}`, d.deviceId, false, d.deviceId === current)));
  select.disabled = devices.length === 0;
  if (devices.length === 0) select.append(new Option(`No ${fallback.toLowerCase()} found`, ""));
}

async function listDevices() {
  const all = await navigator.mediaDevices.enumerateDevices().catch(() => []);
  const of = (kind) => all.filter((d) => d.kind === kind && d.deviceId);
  fillSelect($("camera-select"), of("videoinput"), preview?.getVideoTracks()[0]?.getSettings().deviceId, "Camera");
  fillSelect($("mic-select"), of("audioinput"), preview?.getAudioTracks()[0]?.getSettings().deviceId, "Microphone");
  // Speaker choice needs setSinkId (Chromium, Firefox); elsewhere the system's output is used.
  const canPick = "setSinkId" in HTMLMediaElement.prototype;
  $("speaker-select").hidden = $("speaker-label").hidden = !canPick;
  if (canPick) fillSelect($("speaker-select"), of("audiooutput"), localStorage.getItem("otter-speaker") ?? "default", "Speaker");
}

function stopPreview() {
  for (const t of preview?.getTracks() ?? []) t.stop();
  preview = null;
  watchLevel(null);
  $("preview").srcObject = null;
}

/** (Re)start the preview with the chosen devices; a refusal is shown, not thrown. */
async function startPreview() {
  const cam = $("camera-select").value;
  const mic = $("mic-select").value;
  stopPreview();
  try {
    preview = await navigator.mediaDevices.getUserMedia({
      audio: mic ? { deviceId: { exact: mic } } : true,
      video: { ...(cam ? { deviceId: { exact: cam } } : {}), width: { ideal: 1280 }, height: { ideal: 720 } },
    });
    notice("");
  } catch (error) {
    const denied = error?.name === "NotAllowedError" || error?.name === "SecurityError";
    notice(messageFor(denied ? ErrorCode.SdkMediaDenied : ErrorCode.SdkMediaUnavailable));
  }
  $("preview").srcObject = preview;
  $("preview-off").hidden = Boolean(preview?.getVideoTracks().length);
  document.querySelector(".level").hidden = !preview?.getAudioTracks().length;
  watchLevel(preview);
  await listDevices();
}

function showEmbed() {
  const room = isValidRoomId($("room").value) ? $("room").value : "consult-42";
  $("embed-code").textContent = `<div id="videos"></div>
<script type="module">
  import { join } from "${location.origin}/otter.js";
  const call = await join({
    url: "${location.origin}",
    room: "${room}",
    token: () => fetch("/token?room=${room}", { method: "POST" }).then((r) => r.text()),
    name: "Your user's name",
  });
  call.addEventListener("track", ({ detail: { peer, stream } }) => {
    let v = document.getElementById("v-" + peer.id);
    if (!v) {
      v = Object.assign(document.createElement("video"), { id: "v-" + peer.id, autoplay: true, playsInline: true });
      document.getElementById("videos").append(v);
    }
    v.srcObject = stream;
  });
  call.addEventListener("peerleft", ({ detail: { peer } }) => document.getElementById("v-" + peer.id)?.remove());
</script>`;
}

// -- the call grid -----------------------------------------------------------------------------

function tile(peer) {
  let fig = document.querySelector(`figure[data-peer="${CSS.escape(peer.id)}"]`);
  if (!fig) {
    fig = document.createElement("figure");
    fig.className = "tile";
    fig.dataset.peer = peer.id;
    fig.dataset.kind = "camera";
    fig.innerHTML = `<video autoplay playsinline></video><p class="avatar" aria-hidden="true"></p>
      <span class="badge" hidden></span>
      <figcaption><span class="who"></span> <span class="ind mic-off" hidden>muted</span> <span class="ind cam-off" hidden>camera off</span></figcaption>`;
    const speaker = localStorage.getItem("otter-speaker");
    if (speaker && fig.querySelector("video").setSinkId) fig.querySelector("video").setSinkId(speaker).catch(() => {});
    $("videos").append(fig);
  }
  fig.querySelector(".who").textContent = who(peer);
  fig.querySelector(".avatar").textContent = who(peer).slice(0, 1).toUpperCase();
  showMedia(fig, peer.media ?? { audio: true, video: true }, who(peer));
  return fig;
}

/** Mute and camera indicators of a tile, also in its accessible name. */
function showMedia(fig, { audio, video }, name) {
  fig.querySelector(".mic-off").hidden = audio;
  fig.querySelector(".cam-off").hidden = video;
  fig.classList.toggle("cam-off", !video);
  const states = [audio ? "" : "microphone muted", video ? "" : "camera off"].filter(Boolean);
  fig.setAttribute("aria-label", states.length ? `${name}, ${states.join(", ")}` : name);
}

function screenTile(peer, stream) {
  const fig = document.createElement("figure");
  fig.className = "tile";
  fig.dataset.screen = peer.id;
  fig.dataset.kind = "screen";
  fig.setAttribute("aria-label", `${who(peer)}'s screen`);
  fig.innerHTML = `<video autoplay playsinline muted></video><figcaption><span class="who"></span></figcaption>`;
  fig.querySelector(".who").textContent = `${who(peer)}'s screen`;
  fig.querySelector("video").srcObject = stream;
  stream.addEventListener("removetrack", () => { if (stream.getTracks().length === 0) fig.remove(); });
  $("videos").append(fig);
  return fig;
}

function onTrack({ detail: { peer, track, stream } }) {
  if (!peer.stream || stream === peer.stream) {
    const video = tile(peer).querySelector("video");
    if (video.srcObject !== stream) video.srcObject = stream;
    return;
  }
  // A second stream from that peer: its screen share.
  const existing = [...document.querySelectorAll(`figure[data-screen="${CSS.escape(peer.id)}"]`)].find((f) => f.querySelector("video").srcObject === stream);
  if (!existing) screenTile(peer, stream);
  track.addEventListener("ended", () => existing?.remove());
}

// -- connection panel from getStats() ----------------------------------------------------------

async function peerPath(peer) {
  const stats = await peer.pc.getStats();
  let pair = null;
  let lost = 0;
  let received = 0;
  stats.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    if (s.type === "inbound-rtp") { lost += Math.max(0, s.packetsLost ?? 0); received += s.packetsReceived ?? 0; }
  });
  const local = pair && stats.get(pair.localCandidateId);
  const remote = pair && stats.get(pair.remoteCandidateId);
  const relayed = local?.candidateType === "relay" || remote?.candidateType === "relay";
  return {
    path: pair ? (relayed ? "relayed" : "direct") : "connecting",
    via: relayed ? `TURN over ${(local?.candidateType === "relay" ? local.relayProtocol : remote?.protocol) ?? "udp"}` : local ? `${local.protocol}` : "",
    rtt: pair?.currentRoundTripTime != null ? `${Math.round(pair.currentRoundTripTime * 1000)} ms` : "…",
    loss: received + lost > 0 ? `${((100 * lost) / (received + lost)).toFixed(1)} %` : "…",
  };
}

async function refreshConnections() {
  if (!call || call.state === "closed") return;
  const box = $("conn");
  const peers = [...call.peers.values()];
  if (peers.length === 0) {
    box.innerHTML = `<p class="empty">Waiting for someone to join. Copy the invite link and send it.</p>`;
    return;
  }
  const parts = await Promise.all(peers.map(async (peer) => ({ peer, info: await peerPath(peer).catch(() => null) })));
  box.replaceChildren(...parts.flatMap(({ peer, info }) => {
    if (!info) return [];
    const h = document.createElement("h3");
    h.textContent = who(peer);
    const dl = document.createElement("dl");
    dl.dataset.peer = peer.id;
    for (const [k, v] of [["Path", info.via ? `${info.path} (${info.via})` : info.path], ["Round trip", info.rtt], ["Packet loss", info.loss]]) {
      dl.append(Object.assign(document.createElement("dt"), { textContent: k }), Object.assign(document.createElement("dd"), { textContent: v }));
    }
    const badge = tile(peer).querySelector(".badge");
    badge.hidden = info.path === "connecting";
    badge.dataset.path = info.path;
    badge.textContent = info.path === "relayed" ? "relayed" : "direct";
    return [h, dl];
  }));
}

// -- joining and leaving -----------------------------------------------------------------------

function wire(call, room) {
  call.addEventListener("peerjoined", ({ detail: { peer } }) => { tile(peer); log(`${who(peer)} joined`); });
  call.addEventListener("peerleft", ({ detail: { peer, reason } }) => {
    document.querySelectorAll(`figure[data-peer="${CSS.escape(peer.id)}"], figure[data-screen="${CSS.escape(peer.id)}"]`).forEach((f) => f.remove());
    log(`${who(peer)} left (${reason})`);
    refreshConnections();
  });
  call.addEventListener("track", onTrack);
  call.addEventListener("peermedia", ({ detail: { peer } }) => tile(peer)); // tile() shows peer.media
  call.addEventListener("peerstate", ({ detail: { peer, state } }) => {
    tile(peer).dataset.state = state;
    if (state === "failed" || state === "disconnected") log(`connection to ${who(peer)}: ${state}`);
    if (state === "connected") refreshConnections();
  });
  call.addEventListener("state", ({ detail: { state } }) => {
    status(state === "joined" ? `In ${room} as ${call.name || "Guest"}` : state === "reconnecting" ? "Reconnecting…" : state);
  });
  call.addEventListener("message", ({ detail: { peer, text } }) => log(`${who(peer)}: ${text}`, "them"));
  wireFiles(call);
  call.addEventListener("error", ({ detail: { code, error, peer } }) => {
    log(messageFor(code, peer), "error");
    console.warn("otter", code, error.message);
  });
}

function wireFiles(call) {
  const progress = new Map();
  call.addEventListener("fileprogress", ({ detail: { peer, direction, id, name: file, size, bytes } }) => {
    const key = `${direction}:${peer.id}:${id}`;
    const li = progress.get(key) ?? log("");
    progress.set(key, li);
    const pct = size ? Math.floor((100 * bytes) / size) : 100;
    li.textContent = `${direction === "send" ? "Sending" : "Receiving"} ${file} ${direction === "send" ? "to" : "from"} ${who(peer)}: ${pct}%`;
  });
  call.addEventListener("file", ({ detail: { peer, file } }) => {
    const li = log(`${who(peer)} sent `, "them");
    const a = document.createElement("a");
    a.href = URL.createObjectURL(file);
    a.download = file.name;
    a.textContent = `${file.name} (${formatSize(file.size)})`;
    li.append(a);
  });
}

const formatSize = (n) => (n < 1024 ? `${n} bytes` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KB` : `${(n / (1 << 20)).toFixed(1)} MB`);

async function start(event) {
  event?.preventDefault();
  const room = $("room").value.trim();
  if (!isValidRoomId(room)) { notice(messageFor(ErrorCode.BadRoomId)); $("room").focus(); return; }
  const name = $("name").value.trim();
  localStorage.setItem("otter-name", name);
  $("join-button").disabled = true;
  status(`Joining ${room}…`);
  try {
    if (!preview) await startPreview();
    call = await join({
      room, name,
      token: params.get("token") ?? undefined,
      iceTransportPolicy: $("relay").checked ? "relay" : "all",
      media: preview ?? false,
    });
  } catch (error) {
    $("join-button").disabled = false;
    status("Not in a call");
    notice(messageFor(error.code ?? ErrorCode.SdkConnect));
    return;
  }
  $("join-button").disabled = false;
  window.otter = { call }; // for the console and the end-to-end tests
  sessionStorage.setItem("otter-room", room); // a reload rejoins this room
  const url = new URL(location.href);
  url.search = `?room=${encodeURIComponent(room)}`;
  url.hash = "";
  history.replaceState(null, "", url);
  if (preview) notice(""); // else the preview's message stays: joined to watch and listen
  enterStage(room, name);
  wire(call, room);
}

function enterStage(room, name) {
  watchLevel(null);
  $("prejoin").hidden = true;
  $("left").hidden = true;
  $("stage").hidden = false;
  $("local").srcObject = call.localStream;
  document.querySelector(".tile.local .who").textContent = name ? `${name} (you)` : "You";
  document.querySelector(".tile.local .avatar").textContent = (name || "Y").slice(0, 1).toUpperCase();
  showMedia(document.querySelector(".tile.local"), { audio: true, video: Boolean(call.localStream?.getVideoTracks().length) }, "You");
  status(`In ${room} as ${name || "Guest"}`);
  $("mic").focus();
  clearInterval(window.statsTimer);
  window.statsTimer = setInterval(refreshConnections, 2000);
}

function leave() {
  sessionStorage.removeItem("otter-room");
  stopShare();
  call?.leave();
  stopPreview(); // the page owns the camera stream: release it (the camera light goes off)
  clearInterval(window.statsTimer);
  document.querySelectorAll("figure[data-peer], figure[data-screen]").forEach((f) => f.remove());
  $("log").replaceChildren();
  $("stage").hidden = true;
  $("left").hidden = false;
  notice("");
  status("You left the call");
  $("rejoin").focus();
}

// -- controls ----------------------------------------------------------------------------------

function toggle(button, on, labels) {
  button.setAttribute("aria-pressed", String(on));
  button.querySelector(".label").textContent = labels[on ? 1 : 0];
}

async function share() {
  if (screen) { stopShare(); return; }
  try {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    screen = stream.getVideoTracks()[0];
    screen.addEventListener("ended", stopShare); // "Stop sharing" in the browser's own bar
    call.addTrack(screen, stream);
    const fig = screenTile({ id: "local", name: "Your" }, stream);
    fig.classList.add("local");
    fig.querySelector(".who").textContent = "Your screen";
    toggle($("share"), true, ["Share screen", "Stop sharing"]);
  } catch (error) {
    if (error?.name !== "NotAllowedError") log(`Screen sharing failed: ${error.message}`, "error");
  }
}

function stopShare() {
  if (!screen) return;
  const track = screen;
  screen = null;
  call?.removeTrack(track);
  track.stop();
  document.querySelector('figure[data-screen="local"]')?.remove();
  toggle($("share"), false, ["Share screen", "Stop sharing"]);
}

$("join").addEventListener("submit", start);
$("chat").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text || !call) return;
  const n = call.send(text);
  log(n ? `me: ${text}` : `me (nobody is here yet): ${text}`, "me");
  $("text").value = "";
});
$("file").addEventListener("change", async () => {
  const file = $("file").files[0];
  $("file").value = "";
  if (!file || !call) return;
  try {
    await call.sendFile(file);
    log(`${file.name} delivered`);
  } catch (error) {
    log(`${file.name} not sent: ${messageFor(error.code ?? ErrorCode.SdkFile)}`, "error");
  }
});
$("mic").addEventListener("click", () => {
  const muted = !call.isMuted("audio");
  muted ? call.mute("audio") : call.unmute("audio");
  toggle($("mic"), muted, ["Mute", "Unmute"]);
  showMedia(document.querySelector(".tile.local"), { audio: !muted, video: !call.isMuted("video") }, "You");
});
$("cam").addEventListener("click", () => {
  const off = !call.isMuted("video");
  off ? call.mute("video") : call.unmute("video");
  toggle($("cam"), off, ["Stop camera", "Start camera"]);
  showMedia(document.querySelector(".tile.local"), { audio: !call.isMuted("audio"), video: !off }, "You");
});
$("share").addEventListener("click", share);
$("copy").addEventListener("click", async () => {
  const link = `${location.origin}/?room=${encodeURIComponent(call.room)}`;
  try { await navigator.clipboard.writeText(link); log(`Invite link copied: ${link}`); } catch { log(`Send this invite link: ${link}`); }
});
$("copy-embed").addEventListener("click", () => navigator.clipboard.writeText($("embed-code").textContent).catch(() => {}));
$("leave").addEventListener("click", leave);
$("rejoin").addEventListener("click", async () => {
  $("left").hidden = true;
  $("prejoin").hidden = false;
  await startPreview();
  $("join-button").focus();
});
for (const id of ["camera-select", "mic-select"]) $(id).addEventListener("change", startPreview);
$("speaker-select").addEventListener("change", () => {
  const id = $("speaker-select").value;
  localStorage.setItem("otter-speaker", id);
  for (const v of document.querySelectorAll("figure[data-peer] video")) v.setSinkId?.(id).catch(() => {});
});
$("room").addEventListener("input", showEmbed);
navigator.mediaDevices?.addEventListener?.("devicechange", listDevices);

showEmbed();
const rejoin = sessionStorage.getItem("otter-room") === $("room").value;
if ((params.get("autojoin") === "1" || rejoin) && $("room").value) start();
else startPreview();
