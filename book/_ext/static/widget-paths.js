// Tell RequireJS where the ipywidgets HTML manager lives, so that the fonts it loads
// resolve under _static/html-manager/ instead of 404ing relative to the page.
(function () {
  var root = document.documentElement.dataset.content_root || "";
  window.require.config({paths: {"@jupyter-widgets/html-manager/dist": root + "_static/html-manager"}});
})();
