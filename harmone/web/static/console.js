/* HARMON-E console: the little behaviour the server-rendered pages need.
 * - "12 s ago" texts that keep counting;
 * - the Copy button of the Control Hub (Clipboard API, with a fallback);
 * - form fields shown or hidden by a choice (gateway address, own CPMS, site list);
 * - live updates over server-sent events: charging stations list, charging station page,
 *   the connection log, and the message inspector (pause / resume, filter by action,
 *   search, expand).
 * The server renders every piece of HTML; this file only places it. */
(function () {
  "use strict";

  // -- relative times --------------------------------------------------------------------
  function ago(iso) {
    if (!iso) return "never";
    var then = Date.parse(iso);
    if (isNaN(then)) return "";
    var s = Math.max(0, Math.floor((Date.now() - then) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }

  function tick() {
    document.querySelectorAll("time.ago").forEach(function (t) {
      var text = ago(t.getAttribute("datetime"));
      if (t.textContent !== text) t.textContent = text;
    });
  }
  setInterval(tick, 1000);

  function parseHTML(html) {
    var t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content;
  }

  // -- copy to clipboard -------------------------------------------------------------------
  function copyText(input) {
    var text = input.value;
    function fallback() {
      // Older browsers, or pages not in a secure context: copy the selected field.
      input.focus();
      input.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      return Promise.resolve(ok);
    }
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(function () { return true; }, fallback);
    }
    return fallback();
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var id = button.getAttribute("data-copy");
    var input = document.getElementById(id);
    var status = document.querySelector('[data-copy-status="' + id + '"]');
    var label = button.querySelector("[data-copy-label]") || button;
    copyText(input).then(function (ok) {
      if (ok) {
        label.textContent = "Copied";
        if (status) status.textContent = "Copied to the clipboard: " + input.value;
        button.setAttribute("data-copied", "true");
      } else {
        input.focus();
        input.select();
        if (status) status.textContent = "Selected: press Ctrl+C (or ⌘+C) to copy.";
      }
      clearTimeout(button._copyTimer);
      button._copyTimer = setTimeout(function () {
        label.textContent = "Copy";
        button.removeAttribute("data-copied");
      }, 2500);
    });
  });

  // -- fields that depend on a choice ------------------------------------------------------
  function toggleBy(groupSelector, radioName, targetSelector, showWhen) {
    document.querySelectorAll(groupSelector).forEach(function (group) {
      var form = group.closest("form") || document;
      var target = form.querySelector(targetSelector);
      if (!target) return;
      function update() {
        var checked = group.querySelector('input[name="' + radioName + '"]:checked');
        target.hidden = !checked || checked.value !== showWhen;
      }
      group.addEventListener("change", update);
      update();
    });
  }
  toggleBy("[data-site-type]", "type", "[data-gateway-field]", "gateway");
  toggleBy("[data-cpms-mode]", "cpms_mode", "[data-own-cpms]", "own");
  toggleBy("[data-site-access]", "access", "[data-site-list]", "some");

  // -- server-sent events ------------------------------------------------------------------
  function liveStatus(state) {
    var el = document.querySelector("[data-live-status]");
    if (!el) return;
    var text = el.querySelector("[data-live-text]");
    el.classList.toggle("is-live", state === "live");
    el.classList.toggle("is-down", state === "down");
    text.textContent = { live: "Live", connecting: "Reconnecting…", down: "Not updating" }[state];
  }

  function stream(url, handlers) {
    var source = new EventSource(url);
    source.onopen = function () { liveStatus("live"); };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (signed out, or the page is gone): reload to see why.
        liveStatus("down");
        setTimeout(function () { window.location.reload(); }, 1500);
      } else {
        liveStatus("connecting");
      }
    };
    Object.keys(handlers).forEach(function (name) {
      source.addEventListener(name, function (event) { handlers[name](JSON.parse(event.data)); });
    });
    window.addEventListener("pagehide", function () { source.close(); });
    return source;
  }

  function siteGone(source) {
    source.close();
    liveStatus("down");
    var main = document.getElementById("main");
    var box = document.createElement("div");
    box.className = "alert alert-error";
    box.setAttribute("role", "alert");
    box.textContent = "This site or charging station no longer exists.";
    main.prepend(box);
  }

  // -- charging stations tab ---------------------------------------------------------------
  var chargers = document.getElementById("chargers");
  if (chargers && chargers.dataset.stream) {
    var tbody = chargers.querySelector("[data-rows]");
    var findRow = function (id) {
      for (var i = 0; i < tbody.rows.length; i++) {
        if (tbody.rows[i].dataset.id === id) return tbody.rows[i];
      }
      return null;
    };
    var summarise = function () {
      var rows = tbody.rows.length;
      var online = tbody.querySelectorAll('tr[data-online="1"]').length;
      var summary = document.querySelector("[data-summary]");
      if (summary) {
        summary.textContent = online + " online · " + rows + " charging station" + (rows === 1 ? "" : "s");
      }
      var count = document.querySelector("[data-charger-count]");
      if (count) {
        count.querySelector("[data-online-count]").textContent = online;
        count.querySelector("[data-total-count]").textContent = rows;
        count.classList.toggle("has", online > 0);
      }
      chargers.querySelector("[data-empty]").hidden = rows > 0;
    };
    var source = stream(chargers.dataset.stream, {
      snapshot: function (data) {
        tbody.replaceChildren(parseHTML(data.html));
        summarise();
        tick();
      },
      charger: function (data) {
        var row = parseHTML(data.html).querySelector("tr");
        var old = findRow(data.id);
        if (old) {
          old.replaceWith(row);
        } else {
          var before = null;
          for (var i = 0; i < tbody.rows.length; i++) {
            if (tbody.rows[i].dataset.id > data.id) { before = tbody.rows[i]; break; }
          }
          tbody.insertBefore(row, before);
        }
        row.classList.add("flash");
        summarise();
        tick();
      },
      seen: function (data) {
        var row = findRow(data.id);
        var time = row && row.querySelector("time.ago");
        if (time) {
          time.setAttribute("datetime", data.last_seen);
          time.textContent = ago(data.last_seen);
        }
      },
      gone: function () { siteGone(source); }
    });
    summarise();
  }

  // -- connection log tab ------------------------------------------------------------------
  var connectionLog = document.getElementById("connection-log");
  if (connectionLog && connectionLog.dataset.stream) {
    var logRows = connectionLog.querySelector("[data-rows]");
    var logSource = stream(connectionLog.dataset.stream, {
      log: function (data) {
        var fresh = parseHTML(data.html);
        var changed = logRows.rows.length > 0 && fresh.children.length > 0 &&
          fresh.firstElementChild.textContent !== logRows.rows[0].textContent;
        logRows.replaceChildren(fresh);
        if (changed) logRows.rows[0].classList.add("flash");
        var any = logRows.rows.length > 0;
        connectionLog.querySelector("[data-log-table]").hidden = !any;
        connectionLog.querySelector("[data-empty]").hidden = any;
        tick();
      },
      gone: function () { siteGone(logSource); }
    });
  }

  // -- charging station page and message inspector -----------------------------------------
  var panels = document.getElementById("charger-panels");
  if (panels && panels.dataset.stream) {
    var list = document.getElementById("inspector");
    var empty = document.getElementById("inspector-empty");
    var statusLine = document.getElementById("inspector-status");
    var pauseButton = document.getElementById("inspector-pause");
    var actionSelect = document.getElementById("inspector-action");
    var search = document.getElementById("inspector-search");
    var expandButton = document.getElementById("inspector-expand");
    var limit = 200;
    var paused = false;
    var expanded = false;
    var held = [];

    var refreshActions = function () {
      var seen = {};
      list.querySelectorAll("li.frame").forEach(function (li) {
        if (li.dataset.action) seen[li.dataset.action] = true;
      });
      var current = actionSelect.value;
      var names = Object.keys(seen).sort();
      var existing = Array.prototype.map.call(actionSelect.options, function (o) { return o.value; }).slice(1);
      if (names.join("\n") === existing.join("\n")) return;
      actionSelect.replaceChildren(new Option("All actions", ""));
      names.forEach(function (name) { actionSelect.add(new Option(name, name)); });
      actionSelect.value = seen[current] ? current : "";
    };

    var applyFilter = function () {
      var action = actionSelect.value;
      var needle = search.value.trim().toLowerCase();
      var total = 0;
      var shown = 0;
      list.querySelectorAll("li.frame").forEach(function (li) {
        total += 1;
        var visible = (!action || li.dataset.action === action) &&
          (!needle || li.textContent.toLowerCase().indexOf(needle) !== -1);
        li.hidden = !visible;
        if (visible) shown += 1;
      });
      empty.hidden = total > 0;
      list.hidden = total === 0;
      var parts = [];
      if (paused) parts.push("Paused" + (held.length ? ": " + held.length + " new message" + (held.length === 1 ? "" : "s") + " waiting" : ""));
      if (total && shown !== total) parts.push("Showing " + shown + " of " + total + " messages");
      statusLine.textContent = parts.join(" · ");
    };

    var addFrames = function (items) {
      items.forEach(function (item) {
        var li = parseHTML(item.html).querySelector("li");
        li.classList.add("new");
        if (expanded) li.querySelector("details").open = true;
        list.prepend(li);
      });
      while (list.children.length > limit) list.lastElementChild.remove();
      refreshActions();
      applyFilter();
    };

    pauseButton.addEventListener("click", function () {
      paused = !paused;
      pauseButton.setAttribute("aria-pressed", String(paused));
      pauseButton.textContent = paused ? "Resume" : "Pause";
      if (!paused && held.length) addFrames(held.splice(0));
      applyFilter();
    });
    expandButton.addEventListener("click", function () {
      expanded = !expanded;
      expandButton.setAttribute("aria-pressed", String(expanded));
      expandButton.textContent = expanded ? "Collapse all" : "Expand all";
      list.querySelectorAll("details").forEach(function (d) { d.open = expanded; });
    });
    actionSelect.addEventListener("change", applyFilter);
    search.addEventListener("input", applyFilter);
    refreshActions();
    applyFilter();

    var after = list.dataset.after;
    var url = panels.dataset.stream + (after ? "?after=" + encodeURIComponent(after) : "");
    var charger = stream(url, {
      state: function (data) {
        panels.replaceChildren(parseHTML(data.html));
        tick();
      },
      seen: function (data) {
        var time = panels.querySelector(".status-strip time.ago");
        if (time) {
          time.setAttribute("datetime", data.last_seen);
          time.textContent = ago(data.last_seen);
        }
      },
      frames: function (items) {
        if (paused) {
          Array.prototype.push.apply(held, items);
          if (held.length > limit) held.splice(0, held.length - limit);
          applyFilter();
        } else {
          addFrames(items);
        }
      },
      gone: function () { siteGone(charger); }
    });
  }
})();
