// The /map page: draws what GET /v1/vehicles answers, with its filters as controls. Every
// change runs the real query and shows its URL. Plain script (no build step), loaded after
// Leaflet; the page allows no inline script (CSP), so settings arrive as data attributes.

(() => {
  const L = window.L;
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const KEY_STORE = "sharenow-gateway-api-key";
  const HEALTH_EVERY_MS = 15_000;
  /** Colours of the fuel types the partner names today; others get one from PALETTE by name. */
  const COLOURS = { ELECTRIC: "#1a9850", GASOLINE: "#d73027", DIESEL: "#4575b4" };
  const PALETTE = ["#984ea3", "#ff7f00", "#a65628", "#f781bf", "#666666"];

  const state = { bbox: undefined, near: undefined, mode: undefined, health: undefined, seq: 0 };
  const known = { fuelTypes: new Set(), seats: new Set() };

  const map = L.map("map", { boxZoom: false, zoomSnap: 0.25, preferCanvas: false });
  map.attributionControl.setPrefix('<a href="https://leafletjs.com">Leaflet</a>');
  const tilesUrl = body.dataset.tilesUrl;
  if (tilesUrl) {
    // Plain text from MAP_TILES_ATTRIBUTION (escaped by the server into the attribute, read back
    // as text here); Leaflet's control writes HTML, so it is escaped again.
    const text = body.dataset.tilesAttribution ?? "";
    const esc = document.createElement("span");
    esc.textContent = text;
    L.tileLayer(tilesUrl, { attribution: esc.innerHTML, maxZoom: 19, crossOrigin: false }).addTo(map);
  } else {
    body.classList.add("no-tiles");
  }
  map.setView([50, 10], 5);
  // While the map pans or zooms (animated), marker positions on screen are not final.
  map.on("movestart zoomstart", () => {
    body.dataset.moving = "true";
  });
  map.on("moveend zoomend", () => {
    delete body.dataset.moving;
  });
  const markers = L.layerGroup().addTo(map);
  const areaLayer = L.layerGroup().addTo(map);
  let fitted = false;

  function colourOf(fuel) {
    if (COLOURS[fuel]) return COLOURS[fuel];
    let h = 0;
    for (const ch of String(fuel)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
    return PALETTE[h % PALETTE.length];
  }

  // --- API key (when the page says the API needs one, or on a 401); kept in this tab only. ---
  const storedKey = () => sessionStorage.getItem(KEY_STORE) ?? "";
  function askForKey(message) {
    $("key-form").hidden = false;
    $("key").focus();
    showError(message);
    setState("needs-key");
  }
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key").value);
    $("key").value = "";
    $("key-form").hidden = true;
    query();
  });

  // --- Query building: the same parameters, in a fixed order, as the API documents them. ---
  const round = (n) => Math.round(n * 1e5) / 1e5;
  function params() {
    const p = new URLSearchParams();
    if (state.bbox) p.set("bbox", state.bbox.map(round).join(","));
    if (state.near) {
      p.set("near", `${round(state.near.lat)},${round(state.near.lng)}`);
      p.set("radius", String(Number($("radius").value) || 1000));
    }
    for (const id of ["fuelType", "minFuelLevel", "transmission", "seats"]) {
      const v = $(id).value.trim();
      if (v !== "") p.set(id, v);
    }
    return p;
  }
  const urlFor = (p) => `/v1/vehicles${p.size ? `?${p.toString().replaceAll("%2C", ",")}` : ""}`;

  function setState(s) {
    body.dataset.state = s;
  }
  function showError(text) {
    $("error").hidden = !text;
    $("error").textContent = text ?? "";
  }

  async function query() {
    const seq = ++state.seq;
    const url = urlFor(params());
    const link = $("query-url");
    link.href = url;
    link.firstElementChild.textContent = url;
    body.dataset.query = url;
    if (body.dataset.needsKey === "true" && !storedKey()) return askForKey("This gateway needs an API key.");
    setState("loading");
    const headers = { accept: "application/json" };
    if (storedKey()) headers["x-api-key"] = storedKey();
    let res;
    let data;
    try {
      res = await fetch(url, { headers });
      data = await res.json();
    } catch {
      if (seq === state.seq) {
        showError("The gateway did not answer.");
        setState("error");
      }
      return;
    }
    if (seq !== state.seq) return; // A newer query has started: its answer wins.
    if (res.status === 401) {
      sessionStorage.removeItem(KEY_STORE);
      return askForKey(data.detail ?? "The API key was not accepted.");
    }
    if (!res.ok) {
      // RFC 9457 problem details: show the title and detail the gateway gives.
      showError(`${res.status} ${data.title ?? ""}: ${data.detail ?? ""}`);
      setState("error");
      return;
    }
    showError(undefined);
    draw(data.vehicles);
    const cacheStatus = res.headers.get("cache-status") ?? "";
    $("count").textContent = `${data.count} of ${data.total} matching vehicles shown.`;
    // The snapshot's age: the answer's own Age header (RFC 9111 §5.1), no extra call needed.
    const age = Number(res.headers.get("age"));
    renderStatus({
      stale: data.stale,
      fetchedAt: data.fetchedAt,
      cacheStatus,
      ageS: Number.isFinite(age) ? age : undefined,
    });
    body.dataset.count = String(data.count);
    body.dataset.fetchedAt = data.fetchedAt;
    // The snapshot may be new: its age comes from the health answer, asked again now.
    await loadHealth();
    if (seq === state.seq) setState("ready");
  }

  function draw(vehicles) {
    markers.clearLayers();
    const perFuel = new Map();
    for (const v of vehicles) {
      known.fuelTypes.add(v.fuelType);
      if (v.numberOfSeats !== undefined) known.seats.add(v.numberOfSeats);
      perFuel.set(v.fuelType, (perFuel.get(v.fuelType) ?? 0) + 1);
      const colour = colourOf(v.fuelType);
      const m = L.circleMarker([v.position.latitude, v.position.longitude], {
        radius: 5,
        color: "#ffffff",
        weight: 1,
        fillColor: colour,
        fillOpacity: 0.9,
        className: "vehicle",
      });
      m.bindPopup(() => details(v), { maxWidth: 320 });
      m.addTo(markers);
      const el = m.getElement();
      if (el) el.dataset.vin = v.vin;
    }
    fillOptions("fuelType", [...known.fuelTypes].sort());
    fillOptions(
      "seats",
      [...known.seats].sort((a, b) => a - b),
    );
    const legend = $("legend");
    legend.replaceChildren();
    for (const [fuel, n] of [...perFuel].sort()) {
      const li = document.createElement("li");
      const dot = document.createElement("span");
      dot.className = "dot";
      dot.dataset.fuel = fuel;
      li.append(dot, `${fuel}: ${n}`);
      legend.append(li);
      // A colour per fuel type through a class-free way the CSP allows (CSSOM, not a style attribute).
      dot.style.backgroundColor = colourOf(fuel);
    }
    if (!fitted && vehicles.length > 0) {
      fitted = true;
      map.fitBounds(L.latLngBounds(vehicles.map((v) => [v.position.latitude, v.position.longitude])), {
        padding: [20, 20],
      });
    }
  }

  function fillOptions(id, values) {
    const select = $(id);
    const have = new Set([...select.options].map((o) => o.value));
    for (const value of values) {
      if (have.has(String(value))) continue;
      select.append(new Option(String(value), String(value)));
    }
  }

  /** The fields of a vehicle exactly as the API served them (text only, never HTML). */
  function details(v) {
    const dl = document.createElement("dl");
    const row = (name, value) => {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
      dl.append(dt, dd);
    };
    for (const [name, value] of Object.entries(v)) {
      if (name === "position") {
        row("position.latitude", value.latitude);
        row("position.longitude", value.longitude);
      } else row(name, value);
    }
    const link = document.createElement("a");
    link.href = `/v1/vehicles/${encodeURIComponent(v.vin)}`;
    link.textContent = `GET /v1/vehicles/${v.vin}`;
    const wrap = document.createElement("div");
    wrap.className = "vehicle-details";
    wrap.append(dl, link);
    return wrap;
  }

  // --- Status strip: the public health answer plus the last vehicles answer. ---
  let lastAnswer;
  function renderStatus(answer) {
    if (answer) lastAnswer = answer;
    const parts = [];
    const snap = state.health?.gateway?.snapshot;
    if (lastAnswer?.ageS !== undefined) parts.push(`snapshot ${lastAnswer.ageS} s old`);
    else if (snap?.ageS !== undefined) parts.push(`snapshot ${snap.ageS} s old`);
    else if (lastAnswer?.fetchedAt) parts.push(`snapshot from ${lastAnswer.fetchedAt}`);
    if (lastAnswer) {
      parts.push(lastAnswer.stale ? "STALE (served past its TTL)" : "fresh");
      // RFC 9211: members are listed from the origin outwards; the one with `hit` answered.
      // With no hit, the gateway object (the first member) produced the answer.
      const members = lastAnswer.cacheStatus
        .split(",")
        .map((s) => s.trim().split(";"))
        .filter((m) => m[0]);
      const hit = members.find((m) => m.slice(1).some((p) => p.trim() === "hit"));
      const first = members[0];
      if (hit) parts.push(`answered by ${hit[0]} (hit)`);
      else if (first) parts.push(`answered by ${first[0]} (${first.slice(1).join(";").trim() || "miss"})`);
      $("status").title = `Cache-Status: ${lastAnswer.cacheStatus}`;
      $("status").classList.toggle("stale", Boolean(lastAnswer.stale));
    }
    if (state.health && state.health.status !== "ok") parts.push(`health: ${state.health.status}`);
    $("status").textContent = parts.join(" · ") || "…";
  }

  async function loadHealth() {
    try {
      const res = await fetch("/health", { headers: { accept: "application/json" } });
      state.health = await res.json();
    } catch {
      state.health = { status: "unreachable" };
    }
    renderStatus();
  }

  // --- Area controls: draw a box, take the visible area, or pick a centre for `near`. ---
  function setMode(mode) {
    state.mode = mode;
    body.dataset.mode = mode ?? "";
    if (mode === "box") map.dragging.disable();
    else map.dragging.enable();
  }
  /** Draws the area of the query; with `zoom`, the map zooms to it (the box or the circle). */
  function showArea(zoom) {
    areaLayer.clearLayers();
    let shape;
    if (state.bbox) {
      const [w, s, e, n] = state.bbox;
      shape = L.rectangle(
        [
          [s, w],
          [n, e],
        ],
        { className: "area", interactive: false },
      );
    } else if (state.near) {
      shape = L.circle(state.near, {
        radius: Number($("radius").value) || 1000,
        className: "area",
        interactive: false,
      });
    }
    if (!shape) return;
    shape.addTo(areaLayer);
    if (zoom) map.fitBounds(shape.getBounds(), { padding: [20, 20] });
  }
  const boxOf = (bounds) => [bounds.getWest(), bounds.getSouth(), bounds.getEast(), bounds.getNorth()];

  let dragStart;
  let dragRect;
  map.on("mousedown", (ev) => {
    if (state.mode !== "box") return;
    // A drag that draws a box must not also select the page's text.
    L.DomEvent.preventDefault(ev.originalEvent);
    L.DomUtil.disableTextSelection();
    dragStart = ev.latlng;
    dragRect = L.rectangle(L.latLngBounds(dragStart, dragStart), { className: "area drawing", interactive: false });
    dragRect.addTo(areaLayer);
  });
  map.on("mousemove", (ev) => {
    if (dragStart && dragRect) dragRect.setBounds(L.latLngBounds(dragStart, ev.latlng));
  });
  map.on("mouseup", (ev) => {
    if (!dragStart) return;
    L.DomUtil.enableTextSelection();
    const bounds = L.latLngBounds(dragStart, ev.latlng);
    dragStart = undefined;
    dragRect = undefined;
    setMode(undefined);
    if (bounds.getNorth() === bounds.getSouth() || bounds.getEast() === bounds.getWest()) return showArea();
    state.bbox = boxOf(bounds);
    state.near = undefined;
    showArea(true);
    query();
  });
  map.on("click", (ev) => {
    if (state.mode !== "near") return;
    setMode(undefined);
    state.near = ev.latlng;
    state.bbox = undefined;
    showArea(true);
    query();
  });

  // Drawing a box or picking a centre ends following the view (the map then zooms to that area).
  $("draw-box").addEventListener("click", () => {
    $("follow-view").checked = false;
    setMode(state.mode === "box" ? undefined : "box");
  });
  $("pick-near").addEventListener("click", () => {
    $("follow-view").checked = false;
    setMode(state.mode === "near" ? undefined : "near");
  });
  function useView() {
    state.bbox = boxOf(map.getBounds());
    state.near = undefined;
    showArea();
    query();
  }
  $("view-box").addEventListener("click", useView);
  // Following the view: every pan or zoom (a drag of the map) makes the visible area the bbox.
  map.on("moveend", () => {
    if ($("follow-view").checked && !dragStart) useView();
  });
  $("clear-area").addEventListener("click", () => {
    $("follow-view").checked = false;
    state.bbox = undefined;
    state.near = undefined;
    fitted = false; // The next answer (the whole fleet) is fitted into view again.
    setMode(undefined);
    showArea();
    query();
  });
  $("filters").addEventListener("submit", (ev) => ev.preventDefault());
  $("filters").addEventListener("change", (ev) => {
    if (ev.target.id === "follow-view") return ev.target.checked ? useView() : undefined;
    if (ev.target.id === "radius") showArea(true);
    query();
  });

  loadHealth().then(query);
  // The snapshot's age, while someone looks: a hidden tab asks nothing (each /health is a gateway call).
  setInterval(() => {
    if (document.visibilityState === "visible") loadHealth();
  }, HEALTH_EVERY_MS);
})();
