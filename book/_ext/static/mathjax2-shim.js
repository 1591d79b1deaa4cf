// The ipywidgets HTML manager typesets widget labels with MathJax 2's API,
// `MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])`; this book loads MathJax 3,
// which has no `Hub`. Give every object assigned to window.MathJax a `Hub.Queue`
// that forwards to MathJax 3's `typesetPromise`, instead of a TypeError per widget.
(function () {
  var current = window.MathJax;
  function withHub(mathjax) {
    if (mathjax && typeof mathjax === "object" && !mathjax.Hub) {
      Object.defineProperty(mathjax, "Hub", {
        enumerable: false,
        value: {
          Queue: function (command) {
            var element = command && command[2];
            var live = window.MathJax;
            if (live && live.typesetPromise) {
              live.typesetPromise(element ? [element] : undefined).catch(function () {});
            }
          },
        },
      });
    }
    return mathjax;
  }
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: function () { return current; },
    set: function (value) { current = withHub(value); },
  });
  withHub(current);
})();
