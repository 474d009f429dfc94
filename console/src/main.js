// The console's one script (bundled by `make console-assets`): each page names itself in
// <body data-page>, and only its part starts.
import { initHunting } from "./hunting.js";
import { initQueue, initTriage, initRule } from "./pages.js";

function start() {
  const page = document.body.dataset.page;
  const fail = (e) => {
    const note = document.createElement("p");
    note.className = "bad";
    note.id = "console-error";
    note.textContent = `The console could not start: ${e && e.message ? e.message : e}`;
    document.querySelector("main").prepend(note);
  };
  try {
    if (page === "hunting") initHunting().catch(fail);
    else if (page === "alerts" || page === "incidents") initQueue();
    else if (page === "alert" || page === "incident") initTriage();
    else if (page === "rule") initRule();
  } catch (e) { fail(e); }
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
