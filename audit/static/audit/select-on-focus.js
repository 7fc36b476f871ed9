// Selects the whole value of fields marked data-select-on-focus (e.g. a new API key) when they get focus, so it
// copies in one go. A static file rather than an inline onfocus handler: the content security policy forbids those.
document.addEventListener("focusin", (event) => {
  if (event.target.matches("[data-select-on-focus]")) {
    event.target.select();
  }
});
