// Starts the service exactly as `npm start` does (server/main.ts). The bench
// runs its subjects through this file so that a process listing tells them
// apart from servers that tests start.
await import("../../server/main.js");
