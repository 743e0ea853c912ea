// The kiosk's service worker: on install it caches every file of the site, so that after the first visit
// the page opens and grades with no network at all. cg-serve and `cg-serve --export-site` write SITE: the
// site's version (a hash of its files) and their paths, relative to this worker.
"use strict";

const SITE = "__SITE__";
const CACHE = `climbgrade-${SITE.version}`;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SITE.files)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  // An older version's cache goes: a new model or page replaces it whole.
  const old = (keys) => keys.filter((key) => key.startsWith("climbgrade-") && key !== CACHE);
  event.waitUntil(caches.keys().then((keys) => Promise.all(old(keys).map((key) => caches.delete(key)))).then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || new URL(request.url).origin !== self.location.origin) return;
  // The site's files from the cache (the network only for a file not cached yet); anything else, such as
  // climb search, from the network.
  event.respondWith(caches.open(CACHE).then((cache) => cache.match(request)).then((hit) => hit || fetch(request)));
});
