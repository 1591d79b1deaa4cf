// Site behaviour for Attention from Scratch (book/_ext/site_layout.py).
// Give every figure its drawn width as --natural-width, so that site.css can keep
// wide figures readable on a phone.
(function () {
  function measure(image) {
    if (image.naturalWidth) image.style.setProperty("--natural-width", image.naturalWidth + "px");
  }
  document.querySelectorAll("div.cell_output img, figure.attnlab-explorer img").forEach(function (image) {
    if (image.complete) measure(image);
    image.addEventListener("load", function () { measure(image); });
  });
})();
