// deploy/: the Kubernetes manifests validated against the Kubernetes schemas with
// kubernetes-validate (PyPI; .ci/run installs it), and the properties the schemas cannot
// see checked here: memory for --max-sessions, probes, the egress deny, ports, the
// sandbox's pod settings (docs/containers.md), and the Dockerfile against them.
// Needs no cluster and no container engine. YAML is read with the PyYAML that
// kubernetes-validate depends on.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const K8S = path.join(ROOT, 'deploy/kubernetes')
const DOCKERFILE = path.join(ROOT, 'deploy/Dockerfile')
const PYTHON = process.env.PYTHON ?? 'python3'
/** The oldest Kubernetes the manifests are for (user namespaces and procMount on by default), and the newest kubernetes-validate ships. */
const K8S_VERSIONS = ['1.33.0', '1.37.0']
const INSTALL = 'python3 -m pip install kubernetes-validate==1.37.0 (as .ci/run does)'

const MIB = 2 ** 20
/** A session's memory cgroup with the default options (README, "Limits"): memoryBytes + its file space. */
const SESSION_BYTES = 1512 * MIB
/** The server process and its pool of warm sandboxes, on top of the sessions. */
const SERVER_OVERHEAD_BYTES = 256 * MIB

const MANIFESTS = fs
  .readdirSync(K8S)
  .filter((f) => /\.ya?ml$/.test(f))
  .sort()
  .map((f) => path.join(K8S, f))

function python(args, input) {
  return spawnSync(PYTHON, args, { encoding: 'utf8', input, timeout: 120_000 })
}

function requireValidator() {
  const r = python(['-m', 'kubernetes_validate', '--version'])
  if (r.error || r.status !== 0) {
    assert.fail(`kubernetes-validate is not installed for ${PYTHON}: ${INSTALL}\n${r.error?.message ?? r.stderr}`)
  }
  return r.stdout.trim()
}

let loaded
/** Every document of every manifest, each with the file it came from (a fresh copy each call). */
function loadAll() {
  loaded ??= readManifests()
  return structuredClone(loaded)
}

function readManifests() {
  requireValidator() // PyYAML comes with it
  const script = 'import json, sys, yaml\nprint(json.dumps({f: [d for d in yaml.safe_load_all(open(f)) if d] for f in sys.argv[1:]}))'
  const r = python(['-c', script, ...MANIFESTS])
  assert.equal(r.status, 0, `reading the manifests' YAML failed: ${r.stderr}`)
  return Object.entries(JSON.parse(r.stdout)).flatMap(([file, docs]) => docs.map((doc) => ({ file: path.basename(file), ...doc })))
}

function one(docs, kind, name) {
  const found = docs.filter((d) => d.kind === kind && (name === undefined || d.metadata?.name === name))
  assert.equal(found.length, 1, `expected one ${kind}${name ? ` named ${name}` : ''} in deploy/kubernetes, found ${found.length}`)
  return found[0]
}

/** A Kubernetes quantity (`6304Mi`, `6G`, `512`) in bytes. */
function bytes(quantity) {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(quantity))
  assert.ok(m, `not a memory quantity: ${quantity}`)
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 }[m[2]] ?? 1
  return Number(m[1]) * unit
}

function server(docs) {
  const deployment = one(docs, 'Deployment', 'codebay')
  const pod = deployment.spec.template.spec
  const container = pod.containers.find((c) => c.name === 'codebay')
  assert.ok(container, 'the Deployment has no container named codebay')
  const argv = [...(container.command ?? []), ...(container.args ?? [])]
  const flag = (name) => {
    const i = argv.indexOf(name)
    if (i >= 0) return argv[i + 1]
    return argv.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1)
  }
  const ports = container.ports ?? []
  assert.equal(ports.length, 1, 'the server container declares one port')
  return { deployment, pod, container, argv, flag, port: ports[0] }
}

/** A probe's or Service's port (a number or the container port's name) as the container port number. */
function resolvePort(port, containerPort) {
  return typeof port === 'string' ? (port === containerPort.name ? containerPort.containerPort : undefined) : port
}

test('kubernetes-validate is installed (CI installs it; this test does not skip)', () => {
  const version = requireValidator()
  assert.match(version, /^\d+\.\d+/)
})

test('every manifest validates against the Kubernetes schemas (strict, oldest supported and newest)', () => {
  requireValidator()
  assert.ok(MANIFESTS.length >= 5, `expected the manifests in ${K8S}, found ${MANIFESTS.length}`)
  const args = ['-m', 'kubernetes_validate', '--strict', ...K8S_VERSIONS.flatMap((v) => ['-k', v]), ...MANIFESTS]
  const r = python(args)
  const out = `${r.stdout}${r.stderr}`
  assert.equal(r.status, 0, `kubernetes-validate ${args.slice(2).join(' ')} failed:\n${out}`)
  // A kind or apiVersion it has no schema for is only a WARN with exit status 0: not a pass.
  const bad = out.split('\n').filter((l) => /^(WARN|ERROR|FATAL)/.test(l))
  assert.deepEqual(bad, [], `kubernetes-validate did not validate everything:\n${out}`)
  const passed = out.split('\n').filter((l) => /^INFO .* passed for resource /.test(l)).length
  const docs = loadAll()
  assert.equal(passed, docs.length * K8S_VERSIONS.length, `every resource passes once per version:\n${out}`)
})

test('the validator catches a mistake (the strict check is really on)', () => {
  requireValidator()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'codebay-deploy-'))
  try {
    const bad = path.join(dir, 'bad.yaml')
    const text = fs.readFileSync(path.join(K8S, 'deployment.yaml'), 'utf8')
    assert.ok(text.includes('hostUsers: false'))
    fs.writeFileSync(bad, text.replace('hostUsers: false', 'hostUser: false'))
    const r = python(['-m', 'kubernetes_validate', '--strict', '-k', K8S_VERSIONS[0], bad])
    assert.notEqual(r.status, 0, `a misspelt field passed:\n${r.stdout}`)
    assert.match(r.stdout, /'hostUser' was unexpected/)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('the memory limit holds --max-sessions sessions at 1512 MiB each, plus the server', () => {
  const { container, flag } = server(loadAll())
  const value = flag('--max-sessions')
  assert.ok(value !== undefined, 'the server is started without --max-sessions: its default is the node\'s memory, not the pod\'s limit')
  assert.match(value, /^[1-9]\d*$/, `--max-sessions ${value}`)
  const sessions = Number(value)
  const limit = bytes(container.resources?.limits?.memory)
  const need = sessions * SESSION_BYTES + SERVER_OVERHEAD_BYTES
  assert.ok(
    limit >= need,
    `memory limit ${container.resources.limits.memory} = ${limit / MIB} MiB < ${sessions} sessions x 1512 MiB + ${SERVER_OVERHEAD_BYTES / MIB} MiB = ${need / MIB} MiB`,
  )
  // The sessions' files are tmpfs memory the node cannot reclaim: reserve all of it.
  assert.equal(bytes(container.resources?.requests?.memory), limit, 'memory request = limit')
  assert.ok(container.resources?.requests?.cpu, 'a CPU request (the HorizontalPodAutoscaler measures against it)')
})

test('readiness and liveness probes GET /healthz on the container port', () => {
  const { container, port } = server(loadAll())
  for (const kind of ['readinessProbe', 'livenessProbe']) {
    const probe = container[kind]?.httpGet
    assert.ok(probe, `${kind} is an httpGet probe`)
    assert.equal(probe.path, '/healthz', `${kind} path`)
    assert.equal(resolvePort(probe.port, port), port.containerPort, `${kind} port ${probe.port}`)
    assert.equal(probe.scheme ?? 'HTTP', 'HTTP', `${kind} scheme`)
  }
  assert.equal(port.protocol ?? 'TCP', 'TCP')
})

test('the server listens on the container port, in the image and in the pod', () => {
  const { port, flag } = server(loadAll())
  const listen = flag('--listen')
  assert.ok(listen, 'serve --listen is given')
  assert.equal(Number(listen.split(':').pop()), port.containerPort, `--listen ${listen}`)
  assert.ok(!/^(127\.|localhost|\[::1\])/.test(listen), `--listen ${listen} is reachable from the Service`)
  const cmd = /^CMD\s+(\[.*\])\s*$/m.exec(fs.readFileSync(DOCKERFILE, 'utf8'))
  assert.ok(cmd, 'the Dockerfile has an exec-form CMD')
  const argv = JSON.parse(cmd[1])
  assert.equal(argv[argv.indexOf('--listen') + 1], `0.0.0.0:${port.containerPort}`, `Dockerfile CMD ${cmd[1]}`)
})

test('the NetworkPolicy denies all egress of the server pods and lets in the MCP port', () => {
  const docs = loadAll()
  const { deployment, port } = server(docs)
  const policy = one(docs, 'NetworkPolicy')
  const labels = deployment.spec.template.metadata.labels
  for (const [k, v] of Object.entries(policy.spec.podSelector.matchLabels ?? {})) {
    assert.equal(labels[k], v, `the policy selects the server pods (${k}=${v})`)
  }
  assert.ok(Object.keys(policy.spec.podSelector.matchLabels ?? {}).length > 0, 'the policy selects pods by label, not every pod')
  assert.ok(policy.spec.policyTypes?.includes('Egress'), `policyTypes ${JSON.stringify(policy.spec.policyTypes)} includes Egress`)
  assert.ok(policy.spec.egress === undefined || policy.spec.egress.length === 0, `no egress rule: ${JSON.stringify(policy.spec.egress)}`)
  assert.ok(policy.spec.policyTypes.includes('Ingress'))
  const ingressPorts = (policy.spec.ingress ?? []).flatMap((rule) => rule.ports ?? [])
  assert.ok(
    ingressPorts.some((p) => resolvePort(p.port, port) === port.containerPort && (p.protocol ?? 'TCP') === 'TCP'),
    `ingress allows TCP ${port.containerPort}: ${JSON.stringify(policy.spec.ingress)}`,
  )
})

test('the Services select the server pods and expose the container port', () => {
  const docs = loadAll()
  const { deployment, port } = server(docs)
  const labels = deployment.spec.template.metadata.labels
  const services = docs.filter((d) => d.kind === 'Service')
  assert.ok(services.some((s) => s.metadata.name === 'codebay'), 'a Service named codebay')
  for (const service of services) {
    const name = service.metadata.name
    assert.ok(Object.keys(service.spec.selector ?? {}).length > 0, `${name} has a selector`)
    for (const [k, v] of Object.entries(service.spec.selector)) assert.equal(labels[k], v, `${name} selects the server pods (${k}=${v})`)
    assert.equal(service.spec.ports.length, 1, `${name} has one port`)
    const [p] = service.spec.ports
    assert.equal(resolvePort(p.targetPort ?? p.port, port), port.containerPort, `${name} targetPort ${p.targetPort}`)
    assert.equal(p.port, port.containerPort, `${name} port`)
  }
  // An MCP session lives in one pod: the shared address keeps a client on its pod.
  assert.equal(one(docs, 'Service', 'codebay').spec.sessionAffinity, 'ClientIP')
})

test('the pod has the settings the sandbox needs (docs/containers.md) and nothing more', () => {
  const { pod, container, flag } = server(loadAll())
  const sc = container.securityContext ?? {}
  assert.equal(pod.hostUsers, false, 'hostUsers: false (a pod user namespace; procMount: Unmasked needs it)')
  assert.equal(sc.procMount, 'Unmasked', 'procMount: Unmasked (a fresh /proc per sandbox)')
  assert.equal((sc.seccompProfile ?? pod.securityContext?.seccompProfile)?.type, 'Unconfined', 'seccompProfile Unconfined')
  assert.equal((sc.appArmorProfile ?? pod.securityContext?.appArmorProfile)?.type, 'Unconfined', 'appArmorProfile Unconfined')
  const uid = sc.runAsUser ?? pod.securityContext?.runAsUser
  assert.ok(uid > 0, `runAsUser ${uid}: not root (root's per-session id ranges are not mapped in a pod user namespace)`)
  assert.equal(sc.runAsNonRoot ?? pod.securityContext?.runAsNonRoot, true)
  assert.notEqual(sc.privileged, true, 'not privileged')
  assert.equal(sc.allowPrivilegeEscalation, false)
  assert.deepEqual(sc.capabilities?.drop, ['ALL'])
  assert.equal(sc.capabilities?.add, undefined, 'no capability added (CAP_SYS_ADMIN in particular)')
  assert.equal(pod.hostPID ?? false, false)
  assert.equal(pod.hostNetwork ?? false, false)
  // The Dockerfile's user is the pod's, and has no subordinate ids by default: newuidmap
  // cannot map them under no_new_privs, and useradd adds a range by itself.
  const dockerfile = fs.readFileSync(DOCKERFILE, 'utf8')
  assert.match(dockerfile, /sed -i '\/\^codebay:\/d' \/etc\/subuid \/etc\/subgid/, 'the image removes the subordinate ids useradd gives')
  assert.match(dockerfile, /^ARG SUBIDS=$/m, 'subordinate ids are off unless asked for')
  const user = /^USER\s+(\d+)(?::(\d+))?\s*$/m.exec(dockerfile)
  assert.ok(user, 'the Dockerfile sets a numeric USER')
  assert.equal(Number(user[1]), uid, 'the image runs as the pod\'s runAsUser')
  // The API key comes from a mounted Secret.
  const keyFile = flag('--api-key-file')
  assert.ok(keyFile, '--api-key-file is given (a non-loopback bind without a key is refused)')
  const mount = container.volumeMounts.find((m) => keyFile.startsWith(`${m.mountPath}/`))
  assert.ok(mount, `${keyFile} is in a mounted volume`)
  const volume = pod.volumes.find((v) => v.name === mount.name)
  assert.ok(volume?.secret?.secretName, `${mount.name} is a Secret volume`)
  const item = volume.secret.items?.find((i) => i.path === path.relative(mount.mountPath, keyFile))
  assert.ok(item || !volume.secret.items, `the Secret volume maps a key to ${keyFile}`)
})

test('the HorizontalPodAutoscaler scales the Deployment on CPU', () => {
  const docs = loadAll()
  const hpa = one(docs, 'HorizontalPodAutoscaler')
  assert.equal(hpa.apiVersion, 'autoscaling/v2')
  assert.deepEqual(
    { kind: hpa.spec.scaleTargetRef.kind, name: hpa.spec.scaleTargetRef.name },
    { kind: 'Deployment', name: server(docs).deployment.metadata.name },
  )
  assert.ok(hpa.spec.metrics.some((m) => m.type === 'Resource' && m.resource.name === 'cpu'), 'a CPU metric')
  assert.ok(hpa.spec.minReplicas >= 1 && hpa.spec.maxReplicas >= hpa.spec.minReplicas)
})

test('every resource is in the namespace the Namespace manifest makes, at the privileged Pod Security level', () => {
  const docs = loadAll()
  const ns = one(docs, 'Namespace')
  assert.equal(ns.metadata.labels['pod-security.kubernetes.io/enforce'], 'privileged', 'baseline forbids Unconfined seccomp/AppArmor and procMount: Unmasked')
  for (const d of docs.filter((d) => d.kind !== 'Namespace')) {
    assert.equal(d.metadata.namespace, ns.metadata.name, `${d.file}: ${d.kind}/${d.metadata.name}`)
  }
})

test('the image holds the package files the server loads at run time', () => {
  const dockerfile = fs.readFileSync(DOCKERFILE, 'utf8')
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
  // Everything package.json ships but the documentation and deploy/: the entry, the
  // addon, the helper, the drivers, the CLI (index.d.ts for users of the image's package).
  const needed = pkg.files.filter((f) => !/^(docs|deploy)(\/|$)/.test(f) && f !== 'LICENSE')
  assert.ok(needed.includes('codebay.cjs') && needed.includes('bin'), `package.json "files": ${pkg.files}`)
  for (const f of needed) assert.ok(dockerfile.includes(`/src/${f}`), `deploy/Dockerfile copies ${f} (package.json "files") into the runtime stage`)
  assert.match(dockerfile, /^FROM node:\$\{NODE_MAJOR\}-bookworm-slim AS runtime$/m)
  assert.match(dockerfile, /^ARG NODE_MAJOR=20$/m)
  assert.match(dockerfile, /RUN npm ci\b/)
  assert.match(dockerfile, /RUN npm run build\b/)
})
