// Starts `lagdsl lsp` for .grow files: the language server does the work (diagnostics, hover,
// completion, go to definition, formatting); this file only connects VS Code to it.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const command = vscode.workspace.getConfiguration("lagdsl").get("path", "lagdsl");  // the `lagdsl.path` setting
  const server = { command, args: ["lsp"] };
  client = new LanguageClient(
    "lagdsl",
    "lagdsl",
    { run: server, debug: server },
    { documentSelector: [{ scheme: "file", language: "grow" }, { scheme: "untitled", language: "grow" }] },
  );
  context.subscriptions.push(client);
  return client.start().catch((error) => {
    vscode.window.showErrorMessage(
      `lagdsl: cannot start \`${command} lsp\` (${error.message}); install it with ` +
        "`pip install 'lagdsl[lsp]'` or set `lagdsl.path`",
    );
  });
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
