// Starts Swagger UI on /docs (kept out of the page so the CSP needs no inline script).
window.addEventListener("load", function () {
  "use strict";
  if (typeof SwaggerUIBundle !== "function") { return; }
  SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
});
