// GenreWiz's page script, put in the page's <head> by app.py (APP_HEAD): what Gradio's own
// components do not do for a music page. __EXTENSIONS__ is replaced by the containers the server
// decodes (genrewiz.audio.SUPPORTED_EXTENSIONS).
(() => {
  "use strict";

  // 1. The microphone as it hears the music. Gradio's recorder asks for {audio: true}, so the
  // browser runs its voice processing (echo cancellation, noise suppression, automatic gain
  // control), which treats sustained music as noise to remove: ask for all three off.
  const devices = navigator.mediaDevices;
  if (devices && devices.getUserMedia) {
    const getUserMedia = devices.getUserMedia.bind(devices);
    devices.getUserMedia = (constraints) => {
      if (constraints && constraints.audio) {
        const audio = constraints.audio === true ? {} : constraints.audio;
        const music = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
        constraints = { ...constraints, audio: { ...audio, ...music } };
      }
      return getUserMedia(constraints);
    };
  }

  // 2. Files. Gradio's audio input lets through only files whose type is audio/*, so a phone's
  // .mp4 or a .webm (video/... to the browser) is refused with a message that fades. Every file
  // chosen or dropped there is passed on as audio, and the server, which decodes these
  // containers, says what it cannot read where the result would be. A file over the upload
  // limit is kept back, and the page says so in the verdict's place (or, for several files, in
  // the status line and a table row) instead of a toast that fades into a bare "Error".
  const EXTENSIONS = __EXTENSIONS__;
  const ACCEPT = ["audio/*", "video/mp4", "video/webm", ...EXTENSIONS].join(",");
  const ZONES = "#song, #batch-files";

  const limit = () => (window.gradio_config && window.gradio_config.max_file_size) || Infinity;
  const extension = (name) => (name.includes(".") ? name.split(".").pop().toLowerCase() : "unknown");
  const asAudio = (file) =>
    file.type.startsWith("audio/")
      ? file
      : new File([file], file.name, { type: `audio/${extension(file.name)}`, lastModified: file.lastModified });

  function report(target, files) {
    // The refusal goes to the server through a hidden textbox, whose handler writes the message.
    const box = document.querySelector("#refused-files textarea, #refused-files input");
    if (!box) return;
    box.value = JSON.stringify({ target, files, at: Date.now() });
    box.dispatchEvent(new Event("input", { bubbles: true }));
  }

  document.addEventListener(
    "change",
    (event) => {
      const input = event.target;
      if (!(input instanceof HTMLInputElement) || input.type !== "file" || !input.files) return;
      const zone = input.closest(ZONES);
      if (!zone) return;
      const target = zone.id === "song" ? "song" : "batch";
      const chosen = Array.from(input.files);
      const kept = chosen.filter((file) => file.size <= limit()).map((file) => (target === "song" ? asAudio(file) : file));
      const refused = chosen.filter((file) => file.size > limit()).map((file) => ({ name: file.name, size: file.size }));
      if (refused.length || target === "batch") report(target, refused);
      if (!kept.length) {
        event.stopImmediatePropagation();
        input.value = "";
        return;
      }
      if (kept.some((file, i) => file !== chosen[i]) || kept.length !== chosen.length) {
        const transfer = new DataTransfer();
        kept.forEach((file) => transfer.items.add(file));
        input.files = transfer.files;
      }
    },
    true,
  );

  document.addEventListener(
    "drop",
    (event) => {
      const zone = event.target instanceof Element && event.target.closest(ZONES);
      const input = zone && zone.querySelector('input[type="file"]');
      if (!input || !event.dataTransfer || !event.dataTransfer.files.length) return;
      // Dropped files take the path chosen ones take: through the input's "change", above.
      event.preventDefault();
      event.stopPropagation();
      const transfer = new DataTransfer();
      Array.from(event.dataTransfer.files).forEach((file) => transfer.items.add(file));
      input.files = transfer.files;
      event.target.dispatchEvent(new DragEvent("dragleave", { bubbles: true }));
      input.dispatchEvent(new Event("change", { bubbles: true }));
    },
    true,
  );

  document.addEventListener(
    "click",
    (event) => {
      const target = event.target;
      // The file picker offers every container the server decodes, not only audio/* types.
      if (target instanceof HTMLInputElement && target.type === "file" && target.closest(ZONES)) {
        target.accept = ACCEPT;
        return;
      }
      // 3. An example's result appears at the top of the page: on a phone, far above the examples.
      if (target instanceof Element && target.closest("#examples")) showVerdict();
    },
    true,
  );

  function showVerdict() {
    const verdict = document.querySelector("#verdict");
    if (!verdict) return;
    const scroll = () => {
      const box = verdict.getBoundingClientRect();
      if (box.top < 0 || box.top > window.innerHeight - 80) verdict.scrollIntoView({ block: "start" });  // only when out of view
    };
    scroll();
    const watch = new MutationObserver(() => {
      watch.disconnect();
      requestAnimationFrame(scroll);
    });
    watch.observe(verdict, { childList: true, subtree: true, characterData: true });
    setTimeout(() => watch.disconnect(), 10000);
  }
})();
