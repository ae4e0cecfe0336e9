import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
export const codebay = require('../index.js')

/** A JavaScript session that records its calls and answers with `answer(args)`. */
export function fakeSession(answer = () => ({ success: true, data: 'ok', errorMessage: '', requestId: 'req-1' })) {
  const session = {
    calls: [],
    async callMcpTool(toolName, args, autoGenSession) {
      this.calls.push({ self: this, toolName, args, autoGenSession, argc: arguments.length })
      return answer(args)
    },
    getAPIKey: () => 'key',
    getSessionId: () => 'session-1',
  }
  return session
}

/** A backend answer as a remote session would send it (DESIGN §2). */
export function backendJson(fields) {
  return JSON.stringify({ stdout: [], stderr: [], result: [], executionError: '', ...fields })
}
