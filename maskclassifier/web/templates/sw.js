// The page's service worker (issue 30, "offline after the first visit"), rendered by maskclassifier/web/ondevice.py
// for this model: its cache is named after the content versions of everything it holds, so a new model, runtime,
// script or example makes a new worker, which fills a new cache and deletes the old ones.
// - The page and GET /api/model: the network first, the saved copy when the server cannot be reached (marked
//   with the header X-Served-Offline, which static/ondevice.js reads to tell the visitor).
// - Versioned files (static files with ?v=, the model, the detector and the runtime under /device/): the saved
//   copy first; fetched and saved once otherwise (the page's own downloads fill the cache, nothing twice).
// - Anything else (every POST: photos, answers) goes to the network as if there were no worker.
"use strict";
var CACHE = "maskclassifier-{{ version }}";
var SHELL = {{ shell|tojson }};  // saved when the worker installs: the page, /api/model, the page's files
var PAGE = {{ page_url|tojson }};
var CONFIG = {{ config_url|tojson }};

self.addEventListener("install", function (event) {
  event.waitUntil(caches.open(CACHE).then(function (cache) { return cache.addAll(SHELL); }).then(function () {
    return self.skipWaiting();
  }));
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (names) {
    return Promise.all(names.filter(function (name) {
      return name.indexOf("maskclassifier-") === 0 && name !== CACHE;
    }).map(function (name) { return caches.delete(name); }));
  }).then(function () { return self.clients.claim(); }));
});

function offline(saved) {
  if (!saved) { return Response.error(); }
  var headers = new Headers(saved.headers);
  headers.set("X-Served-Offline", "1");
  return saved.blob().then(function (body) {
    return new Response(body, { status: saved.status, statusText: saved.statusText, headers: headers });
  });
}

function networkFirst(request, key) {
  return fetch(request).then(function (response) {
    if (response.ok) {
      var copy = response.clone();
      caches.open(CACHE).then(function (cache) { return cache.put(key, copy); });
    }
    return response;
  }).catch(function () {
    return caches.match(key).then(offline);
  });
}

function savedFirst(request) {
  return caches.match(request).then(function (saved) {
    return saved || fetch(request).then(function (response) {
      if (response.status === 200) {
        var copy = response.clone();
        caches.open(CACHE).then(function (cache) { return cache.put(request, copy); });
      }
      return response;
    });
  });
}

self.addEventListener("fetch", function (event) {
  var request = event.request;
  var url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) { return; }
  if (request.mode === "navigate" && url.pathname === PAGE) {
    event.respondWith(networkFirst(request, PAGE));
  } else if (url.pathname === CONFIG) {
    event.respondWith(networkFirst(request, CONFIG));
  } else if (url.pathname.indexOf("/device/") === 0 || (url.pathname.indexOf("/static/") === 0 && url.searchParams.has("v"))) {
    event.respondWith(savedFirst(request));
  }
});
