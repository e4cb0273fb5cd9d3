// Loads extension.js with stand-ins for `vscode` and `vscode-languageclient/node` (no editor, no
// npm install needed) and prints what it asked for: the server command, its arguments, the
// documents it serves. tests/test_editors.py runs it with node where node is installed.
const Module = require("module");
const path = require("path");

const seen = {};
const stand_ins = {
  vscode: {
    workspace: {
      getConfiguration: (section) => ({
        get: (key, fallback) => (section === "lagdsl" && key === "path" ? process.env.LAGDSL_PATH || fallback : fallback),
      }),
    },
    window: { showErrorMessage: (message) => { seen.error = message; } },
  },
  "vscode-languageclient/node": {
    LanguageClient: class {
      constructor(id, name, server, options) {
        Object.assign(seen, { id, name, server, options });
      }
      start() { seen.started = true; return Promise.resolve(); }
      stop() { seen.stopped = true; return Promise.resolve(); }
      dispose() {}
    },
  },
};
const load = Module._load;
Module._load = function (request, parent, isMain) {
  return request in stand_ins ? stand_ins[request] : load.call(this, request, parent, isMain);
};

const extension = require(path.join(__dirname, "..", "extension.js"));
const context = { subscriptions: [] };
Promise.resolve(extension.activate(context))
  .then(() => extension.deactivate())
  .then(() => {
    seen.subscriptions = context.subscriptions.length;
    console.log(JSON.stringify(seen));
  });
