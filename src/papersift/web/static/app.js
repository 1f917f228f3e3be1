// papersift: small progressive enhancements. Every feature works without this file.
(function () {
  "use strict";

  // Upvote without a page reload: post the same form (with its CSRF token) via fetch.
  function setupVote(form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("button");
      button.disabled = true;
      fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { "Accept": "application/json" },
        credentials: "same-origin"
      }).then(function (response) {
        if (response.status === 401) {  // votes here are accounts' votes: sign in first
          window.location.assign("/signin?next=" + encodeURIComponent(location.pathname + location.search));
          return new Promise(function () {});
        }
        if (response.status === 429) { throw new Error("Too many votes; wait a moment."); }
        if (!response.ok) { throw new Error("Could not record the vote; reload the page."); }
        return response.json();
      }).then(function (data) {
        form.querySelector(".vote-count").textContent = String(data.votes);
        button.classList.toggle("on", data.voted);
        button.setAttribute("aria-pressed", data.voted ? "true" : "false");
        button.title = data.voted ? "Remove your upvote" : "Upvote";
        var undo = form.querySelector("input[name=undo]");
        if (data.voted && !undo) {
          undo = document.createElement("input");
          undo.type = "hidden"; undo.name = "undo"; undo.value = "1";
          form.appendChild(undo);
        } else if (!data.voted && undo) {
          undo.remove();
        }
      }).catch(function (err) {
        showNote(form, err.message);
      }).then(function () { button.disabled = false; });
    });
  }

  function showNote(anchor, text) {
    var note = anchor.parentNode.querySelector(".js-note");
    if (!note) {
      note = document.createElement("span");
      note.className = "js-note muted";
      note.setAttribute("role", "status");
      anchor.parentNode.appendChild(note);
    }
    note.textContent = text;
  }

  // Copy buttons: data-copy="ID of the element whose text to copy".
  function setupCopy(button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target || !navigator.clipboard) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(target.textContent).then(function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 1500);
      }, function () { showNote(button, "Select the text and copy it."); });
    });
  }

  // "Not interested" / "More like this" on For you: post the form, take a dismissed card
  // off at once, then swap in the recomputed list and side panel from the same page.
  function setupFeedback(form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var card = form.closest(".rec");
      var list = document.getElementById("recommendations");
      form.querySelector("button").disabled = true;
      // (getAttribute: the form's own "action" field shadows form.action)
      fetch(form.getAttribute("action"), {
        method: "POST",
        body: new FormData(form),
        headers: { "Accept": "application/json" },
        credentials: "same-origin"
      }).then(function (response) {
        if (!response.ok) { throw new Error("Could not save that; reload the page."); }
        if (form.getAttribute("data-rec-feedback") === "dismiss" && card) { card.remove(); }
        return fetch(window.location.href, { credentials: "same-origin" });
      }).then(function (response) { return response.text(); }).then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ["recommendations", "foryou-side"].forEach(function (id) {
          var now = document.getElementById(id), next = fresh.getElementById(id);
          if (now && next) { now.replaceWith(next); }
        });
        document.querySelectorAll("form[data-rec-feedback]").forEach(setupFeedback);
        document.querySelectorAll("#recommendations form[data-vote]").forEach(setupVote);
      }).catch(function (err) {
        if (list) { showNote(list, err.message); }
        form.querySelector("button").disabled = false;
      });
    });
  }

  document.querySelectorAll("form[data-vote]").forEach(setupVote);
  document.querySelectorAll("form[data-rec-feedback]").forEach(setupFeedback);
  document.querySelectorAll("[data-copy]").forEach(setupCopy);
})();
