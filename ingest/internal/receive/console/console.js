// The event console: plain DOM, no dependencies, no build step. Every value
// from the server goes into the page as text (textContent), never as HTML.
(function () {
  "use strict";
  var KEY = "startdeliver.console.key";
  var $ = function (id) { return document.getElementById(id); };

  function key() { return sessionStorage.getItem(KEY) || ""; }
  function auth() { return "Basic " + btoa(unescape(encodeURIComponent(key() + ":"))); }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }
  function fmt(v) {
    if (v === null || v === undefined || v === "") return "—";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }
  function when(t) {
    if (!t || t.indexOf("0001-") === 0) return "—";
    var d = new Date(t);
    return isNaN(d) ? t : d.toLocaleString();
  }
  function facts(dl, pairs) {
    clear(dl);
    pairs.forEach(function (p) {
      if (p[1] === undefined) return;
      dl.appendChild(el("dt", p[0]));
      dl.appendChild(el("dd", fmt(p[1])));
    });
  }
  function badge(e, status) { e.textContent = status || "?"; e.className = "badge " + (status || ""); }

  async function api(method, path, body, headers) {
    if (!key()) throw new Error("enter the account's API key first");
    var h = { "Authorization": auth() };
    if (body !== undefined) h["Content-Type"] = "application/json";
    Object.keys(headers || {}).forEach(function (k) { h[k] = headers[k]; });
    var resp = await fetch(path, { method: method, headers: h, body: body, credentials: "omit", cache: "no-store" });
    var data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      var err = new Error((data && data.message) || ("HTTP " + resp.status));
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function showAuth() {
    $("auth-state").textContent = key() ? "Key set for this tab." : "No key yet.";
  }

  function row(ev) {
    var tr = el("tr");
    tr.appendChild(el("td", when(ev.completedAt)));
    var td = el("td"); var b = el("span"); badge(b, ev.status); td.appendChild(b); tr.appendChild(td);
    tr.appendChild(el("td", ev.type));
    tr.appendChild(el("td", ev.name));
    tr.appendChild(el("td", ev.userId || ev.anonymousId));
    var idc = el("td"); var open = el("button", ev.messageId, "link"); open.type = "button";
    open.dataset.messageId = ev.messageId;
    open.addEventListener("click", function () { openEvent(ev.messageId); });
    idc.appendChild(open); tr.appendChild(idc);
    return tr;
  }

  async function list() {
    var tbody = $("events").tBodies[0];
    var id = $("find-id").value.trim();
    $("list-state").textContent = "Loading…";
    try {
      var events;
      if (id) {
        events = [await api("GET", "/v1/events/" + encodeURIComponent(id))];
      } else {
        var q = new URLSearchParams();
        ["filter-user:userId", "filter-type:type", "filter-status:status", "filter-limit:limit"].forEach(function (p) {
          var parts = p.split(":"); var v = $(parts[0]).value.trim(); if (v) q.set(parts[1], v);
        });
        events = (await api("GET", "/v1/events?" + q.toString())).events;
      }
      clear(tbody);
      events.forEach(function (ev) { tbody.appendChild(row(ev)); });
      $("list-state").textContent = events.length ? events.length + " event(s), newest first." : "No events match.";
      if (id && events.length === 1) show(events[0]);
    } catch (e) {
      clear(tbody);
      $("list-state").textContent = e.message;
    }
  }

  async function openEvent(id) {
    try { show(await api("GET", "/v1/events/" + encodeURIComponent(id))); }
    catch (e) { $("list-state").textContent = e.message; }
  }

  function show(ev) {
    $("detail").hidden = false;
    $("detail-id").textContent = ev.messageId;
    badge($("detail-status"), ev.status);
    $("detail-reason").textContent = [ev.reason, ev.errorClass && ev.errorClass !== ev.reason ? "(" + ev.errorClass + ")" : ""].join(" ").trim();
    var um = ev.userMatch, cm = ev.customerMatch;
    facts($("detail-facts"), [
      ["type", ev.type], ["name", ev.name], ["userId", ev.userId], ["anonymousId", ev.anonymousId || undefined],
      ["user match", um ? um.rule + ": " + um.field + " = " + fmt(um.value) : undefined],
      ["customer match", cm ? cm.rule + ": " + cm.field + " = " + fmt(cm.value) : undefined],
      ["Startdeliver user", ev.user === null ? undefined : ev.user + (ev.userCreated ? " (created)" : " (matched)")],
      ["Startdeliver customer", ev.customer === null || ev.customer === undefined ? undefined : ev.customer + (ev.customerCreated ? " (created)" : " (matched)")],
      ["delivery attempts", ev.attempts], ["received", when(ev.receivedAt)], ["completed", when(ev.completedAt)],
      ["delivered", ev.deliveredAt ? when(ev.deliveredAt) : undefined],
      ["duplicates dropped", ev.duplicates ? ev.duplicates : undefined], ["trace id", ev.traceId || undefined]
    ]);
    var tbody = $("detail-calls").tBodies[0]; clear(tbody);
    (ev.calls || []).forEach(function (c, i) {
      var tr = el("tr");
      [i + 1, c.method, c.route, c.status || "no answer", c.attempt].forEach(function (v) { tr.appendChild(el("td", v)); });
      tbody.appendChild(tr);
    });
    if (!(ev.calls || []).length) { var tr = el("tr"); var td = el("td", "No Startdeliver calls."); td.colSpan = 5; tr.appendChild(td); tbody.appendChild(tr); }
    var dropped = $("detail-dropped"); clear(dropped);
    if ((ev.dropped || []).length) {
      dropped.appendChild(el("h3", "Values left out"));
      var ul = el("ul"); ev.dropped.forEach(function (d) { ul.appendChild(el("li", d.entity + "." + d.field + ": " + d.reason)); });
      dropped.appendChild(ul);
    }
    var tr2 = $("detail-trace"); clear(tr2);
    if (ev.traceUrl) {
      var a = el("a", "Open its trace"); a.href = ev.traceUrl; a.target = "_blank"; a.rel = "noopener noreferrer"; a.id = "detail-trace-link";
      tr2.appendChild(a);
    } else if (ev.traceCommand) {
      tr2.appendChild(document.createTextNode("Its trace, locally: "));
      tr2.appendChild(el("code", ev.traceCommand));
    }
    var pre = $("detail-payload");
    pre.hidden = !ev.payload; pre.textContent = ev.payload ? JSON.stringify(ev.payload, null, 2) : "";
    $("detail").scrollIntoView({ block: "nearest" });
  }

  async function explain() {
    var box = $("explain-result");
    var headers = {};
    var settings = $("explain-settings").value.trim();
    try {
      JSON.parse($("explain-event").value);
      if (settings) { JSON.parse(settings); headers["X-Segment-Settings"] = btoa(unescape(encodeURIComponent(settings))); }
    } catch (e) {
      box.hidden = false; badge($("explain-status"), "error"); $("explain-reason").textContent = "Not valid JSON: " + e.message;
      return;
    }
    var path = "/v1/explain" + ($("explain-lookup").checked ? "?lookup=true" : "");
    try {
      var r = await api("POST", path, $("explain-event").value, headers);
      box.hidden = false;
      badge($("explain-status"), r.status);
      $("explain-reason").textContent = [r.reason, r.errorClass && r.errorClass !== r.reason ? "(" + r.errorClass + ")" : ""].join(" ").trim();
      facts($("explain-facts"), [
        ["match", r.match ? (r.match.rule ? r.match.rule + ": " : "") + r.match.field + " = " + fmt(r.match.value) : "none"],
        ["customer match", r.customerMatch ? r.customerMatch.rule + ": " + r.customerMatch.field + " = " + fmt(r.customerMatch.value) : undefined],
        ["settings", r.settings], ["from X-Segment-Settings", (r.settingsFromHeader || []).length ? r.settingsFromHeader.join(", ") : undefined],
        ["Segment app", r.segmentAppEnabled ? "enabled" : "disabled"]
      ].concat((r.lookups || []).map(function (l) { return ["lookup " + l.entity, l.says + (l.error ? " — " + l.error : "")]; })));
      var ol = $("explain-calls"); clear(ol);
      (r.calls || []).forEach(function (c) {
        var li = el("li");
        li.appendChild(el("code", c.method + " " + c.route));
        if (c.when) li.appendChild(document.createTextNode(" — if " + (c.when === "found" ? "found" : "not found")));
        if (c.note) li.appendChild(document.createTextNode(" — " + c.note));
        if (c.body !== undefined) li.appendChild(el("pre", JSON.stringify(c.body, null, 2)));
        ol.appendChild(li);
      });
      var dropped = $("explain-dropped"); clear(dropped);
      if ((r.dropped || []).length) {
        dropped.appendChild(el("h3", "Values left out"));
        var ul = el("ul"); r.dropped.forEach(function (d) { ul.appendChild(el("li", d.entity + "." + d.field + ": " + d.reason)); });
        dropped.appendChild(ul);
      }
    } catch (e) {
      box.hidden = false; badge($("explain-status"), "error"); $("explain-reason").textContent = e.message;
      clear($("explain-calls")); clear($("explain-facts"));
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    showAuth();
    $("key-form").addEventListener("submit", function (e) {
      e.preventDefault();
      var k = $("key").value.trim();
      if (k) sessionStorage.setItem(KEY, k);
      $("key").value = "";
      showAuth();
      list();
    });
    $("forget-key").addEventListener("click", function () { sessionStorage.removeItem(KEY); showAuth(); });
    $("find-form").addEventListener("submit", function (e) { e.preventDefault(); list(); });
    $("explain-run").addEventListener("click", explain);
    if (key()) list();
  });
})();
