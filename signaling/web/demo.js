// The demo call page at "/": also the reference example of using the SDK.
// URL parameters: ?room=NAME (or #NAME) to prefill, &name=, &token= (room token when the
// server needs one), &relay=1 (TURN only), &autojoin=1 (join at once).
import { join, isValidRoomId } from "/otter.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const roomParam = params.get("room") ?? decodeURIComponent(location.hash.slice(1));
$("room").value = isValidRoomId(roomParam) ? roomParam : "";
$("name").value = params.get("name") ?? localStorage.getItem("otter-name") ?? "";
$("relay").checked = params.get("relay") === "1";

let call = null;
const status = (text) => { $("status").textContent = text; };

function log(text, cls = "") {
  const li = document.createElement("li");
  li.textContent = text;
  if (cls) li.className = cls;
  $("log").append(li);
  li.scrollIntoView({ block: "nearest" });
  return li;
}

function tile(peer) {
  let fig = document.querySelector(`figure[data-peer="${CSS.escape(peer.id)}"]`);
  if (!fig) {
    fig = document.createElement("figure");
    fig.className = "tile";
    fig.dataset.peer = peer.id;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    const cap = document.createElement("figcaption");
    fig.append(video, cap);
    $("videos").append(fig);
  }
  fig.querySelector("figcaption").textContent = peer.name || peer.id;
  return fig;
}

const who = (peer) => peer.name || peer.id;

async function start(event) {
  event?.preventDefault();
  const room = $("room").value.trim();
  if (!isValidRoomId(room)) { status("room: 1-64 letters, digits, _ or -"); return; }
  const name = $("name").value.trim();
  localStorage.setItem("otter-name", name);
  $("join").hidden = true;
  status(`joining ${room}…`);
  try {
    call = await join({
      room, name,
      token: params.get("token") ?? undefined,
      iceTransportPolicy: $("relay").checked ? "relay" : "all",
      media: { audio: true, video: { width: 640, height: 480 } },
    });
  } catch (error) {
    $("join").hidden = false;
    status(`could not join: ${error.message}`);
    return;
  }
  window.otter = { call }; // for the console and the end-to-end tests
  sessionStorage.setItem("otter-room", room); // a reload rejoins this room
  const url = new URL(location.href);
  url.search = `?room=${encodeURIComponent(room)}`;
  url.hash = "";
  history.replaceState(null, "", url);
  $("stage").hidden = false;
  $("local").srcObject = call.localStream;
  status(`in ${room} as ${call.peerId}`);

  call.addEventListener("peerjoined", ({ detail: { peer } }) => { tile(peer); log(`${who(peer)} joined`); });
  call.addEventListener("peerleft", ({ detail: { peer, reason } }) => {
    document.querySelector(`figure[data-peer="${CSS.escape(peer.id)}"]`)?.remove();
    log(`${who(peer)} left (${reason})`);
  });
  call.addEventListener("track", ({ detail: { peer, stream } }) => {
    const video = tile(peer).querySelector("video");
    if (video.srcObject !== stream) video.srcObject = stream;
  });
  call.addEventListener("peerstate", ({ detail: { peer, state } }) => {
    tile(peer).dataset.state = state;
    if (state === "failed" || state === "disconnected") log(`connection to ${who(peer)}: ${state}`);
  });
  call.addEventListener("state", ({ detail: { state } }) => {
    status(state === "joined" ? `in ${room} as ${call.peerId}` : state);
  });
  call.addEventListener("message", ({ detail: { peer, text } }) => log(`${who(peer)}: ${text}`));
  const progress = new Map();
  call.addEventListener("fileprogress", ({ detail: { peer, direction, id, name: file, size, bytes } }) => {
    const key = `${direction}:${peer.id}:${id}`;
    const li = progress.get(key) ?? log("");
    progress.set(key, li);
    const pct = size ? Math.floor((100 * bytes) / size) : 100;
    li.textContent = `${direction === "send" ? "sending" : "receiving"} ${file} ${direction === "send" ? "to" : "from"} ${who(peer)}: ${pct}%`;
  });
  call.addEventListener("file", ({ detail: { peer, file } }) => {
    const li = log(`${who(peer)} sent `);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(file);
    a.download = file.name;
    a.textContent = `${file.name} (${file.size} bytes)`;
    li.append(a);
  });
  call.addEventListener("error", ({ detail: { code, error } }) => log(`error ${code}: ${error.message}`, "error"));
}

$("join").addEventListener("submit", start);
$("chat").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (!text || !call) return;
  const n = call.send(text);
  log(`me${n ? "" : " (nobody is here yet)"}: ${text}`);
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
    log(`${file.name} not sent: ${error.message}`, "error");
  }
});
$("mic").addEventListener("click", () => {
  const muted = !call.isMuted("audio");
  muted ? call.mute("audio") : call.unmute("audio");
  $("mic").setAttribute("aria-pressed", String(muted));
  $("mic").textContent = muted ? "Unmute" : "Mute";
});
$("cam").addEventListener("click", () => {
  const off = !call.isMuted("video");
  off ? call.mute("video") : call.unmute("video");
  $("cam").setAttribute("aria-pressed", String(off));
  $("cam").textContent = off ? "Camera on" : "Camera off";
});
$("copy").addEventListener("click", async () => {
  const link = `${location.origin}/?room=${encodeURIComponent(call.room)}`;
  try { await navigator.clipboard.writeText(link); log(`link copied: ${link}`); } catch { log(`share this link: ${link}`); }
});
$("leave").addEventListener("click", () => {
  sessionStorage.removeItem("otter-room");
  call?.leave();
  call = null;
  document.querySelectorAll("figure[data-peer]").forEach((f) => f.remove());
  $("stage").hidden = true;
  $("join").hidden = false;
  status("left");
});

const rejoin = sessionStorage.getItem("otter-room") === $("room").value;
if ((params.get("autojoin") === "1" || rejoin) && $("room").value) start();
