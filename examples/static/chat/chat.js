// nucleon chat: the browser side of chat_relay. Every string that came from a user is rendered with
// textContent, never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    status: $("status"),
    statusText: $("status-text"),
    roomTitle: $("room-title"),
    roomName: $("room-name"),
    joinView: $("join-view"),
    joinForm: $("join-form"),
    joinError: $("join-error"),
    joinButton: $("join-button"),
    name: $("name"),
    room: $("room"),
    chatView: $("chat-view"),
    members: $("members"),
    memberCount: $("member-count"),
    messages: $("messages"),
    composer: $("composer"),
    text: $("text"),
    sendError: $("send-error"),
  };

  const ROOM = /^[A-Za-z0-9_-]{1,32}$/;
  const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
  const PALETTE = ["#4f5bd5", "#d5554f", "#2a9d8f", "#e07a1f", "#8e44ad", "#2f80ed", "#c2185b", "#5d8a1f"];

  let ws = null;
  // The room and name joined, kept to join again after the WebSocket drops.
  let joined = null;
  let retry = 0;

  function setStatus(state) {
    els.status.dataset.state = state;
    els.statusText.textContent = state;
  }

  function colorOf(name) {
    let h = 0;
    for (const c of name) h = (h * 31 + c.codePointAt(0)) >>> 0;
    return PALETTE[h % PALETTE.length];
  }

  function avatar(name) {
    const a = document.createElement("span");
    a.className = "avatar";
    a.textContent = Array.from(name)[0].toUpperCase();
    a.style.background = colorOf(name);
    return a;
  }

  function nearBottom() {
    const m = els.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }

  function append(li) {
    const stick = nearBottom();
    els.messages.appendChild(li);
    if (stick) els.messages.scrollTop = els.messages.scrollHeight;
  }

  function showMessage(m) {
    const li = document.createElement("li");
    li.className = "message";
    li.dataset.id = m.id;
    if (joined && m.name === joined.name) li.classList.add("mine");
    const bubble = document.createElement("div");
    bubble.className = "bubble";
    const meta = document.createElement("div");
    meta.className = "meta";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = m.name;
    name.style.color = colorOf(m.name);
    const time = document.createElement("time");
    const when = new Date(m.ts);
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    meta.append(name, time);
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = m.text;
    bubble.append(meta, text);
    li.append(avatar(m.name), bubble);
    append(li);
  }

  function showSystem(text) {
    const li = document.createElement("li");
    li.className = "system";
    li.textContent = text;
    append(li);
  }

  function showMembers(members) {
    els.members.replaceChildren(
      ...members.map((name) => {
        const li = document.createElement("li");
        li.className = "member";
        const label = document.createElement("span");
        label.className = "member-name";
        label.textContent = name;
        li.append(avatar(name), label);
        if (joined && name === joined.name) {
          li.classList.add("me");
          const you = document.createElement("span");
          you.className = "you";
          you.textContent = "(you)";
          li.append(you);
        }
        return li;
      }),
    );
    els.memberCount.textContent = String(members.length);
  }

  function showError(text) {
    const target = joined ? els.sendError : els.joinError;
    target.textContent = text;
    els.joinButton.disabled = false;
  }

  function send(frame) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function onFrame(f) {
    switch (f.type) {
      case "status":
        setStatus(f.state);
        break;
      case "joined":
        joined = { room: f.room, name: f.name };
        retry = 0;
        els.roomName.textContent = f.room;
        els.roomTitle.hidden = false;
        els.joinView.hidden = true;
        els.chatView.hidden = false;
        document.title = `#${f.room} · nucleon chat`;
        els.text.focus();
        break;
      case "members":
        showMembers(f.members);
        break;
      case "message":
        showMessage(f);
        break;
      case "system":
        showSystem(f.text);
        break;
      case "error":
        showError(f.error);
        break;
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${scheme}://${location.host}/ws`);
    ws.addEventListener("open", () => {
      if (joined) send({ type: "join", name: joined.name, room: joined.room });
    });
    ws.addEventListener("message", (e) => {
      try {
        onFrame(JSON.parse(e.data));
      } catch (err) {
        console.error("bad frame", err);
      }
    });
    ws.addEventListener("close", (e) => {
      setStatus("offline");
      if (e.reason) showError(`disconnected: ${e.reason}`);
      // Join the same room again once the relay is back.
      const delay = Math.min(500 * 2 ** retry, 10000);
      retry += 1;
      setTimeout(connect, delay);
    });
  }

  els.joinForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const name = els.name.value.trim();
    const room = els.room.value.trim();
    if (!name || Array.from(name).length > 32 || CONTROL.test(name)) {
      showError("A name is 1 to 32 characters.");
      return;
    }
    if (!ROOM.test(room)) {
      showError("A room is 1 to 32 letters, digits, '_' or '-'.");
      return;
    }
    els.joinError.textContent = "";
    if (send({ type: "join", name, room })) els.joinButton.disabled = true;
    else showError("Not connected to the relay yet.");
  });

  els.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = els.text.value;
    if (!text.trim()) return;
    if (send({ type: "send", text })) {
      els.text.value = "";
      els.sendError.textContent = "";
    } else {
      els.sendError.textContent = "Not connected: the message was not sent.";
    }
  });

  connect();
})();
