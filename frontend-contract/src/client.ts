// A thin typed client for wxbind, on openapi-fetch and the types generated from the spec.
// Access tokens live in memory only; the HttpOnly refresh cookie does the rest.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

export type User = components["schemas"]["UserResponse"];
export type Login = components["schemas"]["LoginResponse"];
export type Message = components["schemas"]["MessageResponse"];
/** `queued`, `sending`, `sent`, `failed` or `under_review` (WeChat holds it for review). */
export type MessageStatus = components["schemas"]["MessageStatus"];
export type Quota = components["schemas"]["QuotaResponse"];
export type QuotaReset = components["schemas"]["QuotaResetResponse"];
export type ApiKey = components["schemas"]["KeyResponse"];
export type CreatedApiKey = components["schemas"]["CreatedKeyResponse"];
export type NewMessage = components["schemas"]["CreateMessageRequest"];
export type BindUrl = components["schemas"]["BindUrlResponse"];
export type BindQrcode = components["schemas"]["BindQrcodeResponse"];
export type MiniprogramPage = components["schemas"]["MiniprogramPage"];
export type Template = components["schemas"]["TemplateResponse"];
export type Keyword = components["schemas"]["Keyword"];
export type KeyProblem = components["schemas"]["KeyProblem"];
/** A message's history: the message as it is now and its events, oldest first. */
export type MessageHistory = components["schemas"]["MessageHistory"];
/** One step of a message's history (`queued`, `retry_scheduled`, `sent`, `failed`, …). */
export type HistoryEvent = components["schemas"]["HistoryEvent"];
export type NewBroadcast = components["schemas"]["CreateBroadcastRequest"];
/** A broadcast with its messages counted by status and by delivery report. */
export type Broadcast = components["schemas"]["BroadcastResponse"];
export type NewWebhook = components["schemas"]["CreateWebhookRequest"];
export type Webhook = components["schemas"]["WebhookResponse"];
/** A new webhook endpoint with its signing secret (shown this once). */
export type CreatedWebhook = components["schemas"]["CreatedWebhookResponse"];
export type WebhookTest = components["schemas"]["WebhookTestResponse"];
export type WebhookDelivery = components["schemas"]["DeliveryResponse"];

/**
 * An API error: the `{error: {code, message, details?}}` body plus the HTTP status. `details`
 * lists every problem of a message's `data` (`invalid_template_data`), one per key.
 */
export class WxbindError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: KeyProblem[] = [],
  ) {
    super(message);
    this.name = "WxbindError";
  }
}

type Fetched<T> = { data?: T; error?: unknown; response: Response };

function unwrap<T>({ data, error, response }: Fetched<T>): T {
  if (response.ok) return data as T;
  const body = error as components["schemas"]["ErrorBody"] | undefined;
  throw new WxbindError(
    response.status,
    body?.error?.code ?? "http_error",
    body?.error?.message ?? response.statusText,
    body?.error?.details ?? [],
  );
}

/** Creates a client for the API at `baseUrl` (e.g. `https://api.example.com`). */
export function createWxbind(baseUrl: string) {
  let accessToken: string | undefined;
  // `include` sends the refresh cookie cross-origin (the server allows listed origins only).
  const api = createClient<paths>({ baseUrl, credentials: "include" });
  api.use({
    onRequest({ request }) {
      if (accessToken) request.headers.set("Authorization", `Bearer ${accessToken}`);
      return request;
    },
  });

  const remember = (login: Login) => {
    accessToken = login.access_token;
    return login;
  };

  /** Runs an authenticated call, refreshing the access token once on a 401. */
  async function authed<T>(call: () => Promise<Fetched<T>>): Promise<T> {
    const first = await call();
    if (first.response.status !== 401) return unwrap(first);
    await refresh();
    return unwrap(await call());
  }

  async function refresh(): Promise<Login> {
    return remember(unwrap(await api.POST("/api/token/refresh")));
  }

  return {
    /** Logs in; also starts the refresh session (HttpOnly cookie). */
    login: async (username: string, password: string) =>
      remember(unwrap(await api.POST("/api/login", { body: { username, password } }))),
    /** A new access token from the refresh session (after a reload, or before expiry). */
    refresh,
    /** Ends the refresh session. */
    logout: async () => {
      accessToken = undefined;
      const { response } = await api.POST("/api/logout");
      if (!response.ok) throw new WxbindError(response.status, "http_error", response.statusText);
    },
    me: () => authed(() => api.GET("/api/me")),
    bindUrl: () => authed(() => api.GET("/api/bind-url")),
    bindQrcode: () => authed(() => api.GET("/api/bind-qrcode")),
    unbind: () => authed(() => api.DELETE("/api/binding")),
    sendMessage: (message: NewMessage) => authed(() => api.POST("/api/messages", { body: message })),
    getMessage: (id: string) =>
      authed(() => api.GET("/api/messages/{id}", { params: { path: { id } } })),
    /** Admins (all) and API keys (their own): the message log, newest first, in pages. */
    messages: (query: NonNullable<paths["/api/messages"]["get"]["parameters"]["query"]> = {}) =>
      authed(() => api.GET("/api/messages", { params: { query } })),
    /** A message's history, oldest first: queued, retries, its outcome, WeChat's delivery
     * report (whoever may see the message). */
    messageHistory: (id: string) =>
      authed(() => api.GET("/api/messages/{id}/history", { params: { path: { id } } })),
    /** Admins only: queues a failed message again (same id, fresh attempts). */
    retryMessage: (id: string) =>
      authed(() => api.POST("/api/messages/{id}/retry", { params: { path: { id } } })),
    /** Admins only: the account bound to a WeChat unionid. */
    findUserByUnionid: (unionid: string) =>
      authed(() => api.GET("/api/users", { params: { query: { unionid } } })),
    /** The official account's templates and the keywords each takes (build forms from them). */
    templates: () => authed(() => api.GET("/api/templates")),
    /** Reads the template list from WeChat now (admins only). */
    syncTemplates: () => authed(() => api.POST("/api/templates/sync")),
    /** Admins only: today's template-send quota and whether sending is paused for it. */
    quota: () => authed(() => api.GET("/api/quota")),
    /** Admins only: resets the day's quota at WeChat (10 a month) and resumes sending. */
    resetQuota: () => authed(() => api.POST("/api/quota/reset")),
    /** Admins only: an API key for a server (`key` is shown this once). */
    createKey: (name: string, scope: "send" | "admin" = "send") =>
      authed(() => api.POST("/api/keys", { body: { name, scope } })),
    /** Admins only: every API key (never the keys themselves). */
    keys: () => authed(() => api.GET("/api/keys")),
    /** Admins only: revokes an API key. */
    revokeKey: (name: string) =>
      authed(() => api.DELETE("/api/keys/{name}", { params: { path: { name } } })),
    /** Admins and API keys: one message per recipient (`{user_ids}` or `{all_bound: true}`);
     * unknown, unbound and unfollowed recipients are counted in `skipped_reasons`. */
    createBroadcast: (broadcast: NewBroadcast) =>
      authed(() => api.POST("/api/broadcasts", { body: broadcast })),
    /** Admins and its sender: a broadcast, its messages counted by status and delivery. */
    getBroadcast: (id: string) =>
      authed(() => api.GET("/api/broadcasts/{id}", { params: { path: { id } } })),
    /** Admins and its sender: a broadcast's messages, newest first, in pages. */
    broadcastMessages: (
      id: string,
      query: NonNullable<paths["/api/broadcasts/{id}/messages"]["get"]["parameters"]["query"]> = {},
    ) => authed(() => api.GET("/api/broadcasts/{id}/messages", { params: { path: { id }, query } })),
    /** Admins and its sender: its queued messages end `failed` (reason `cancelled`). */
    cancelBroadcast: (id: string) =>
      authed(() => api.POST("/api/broadcasts/{id}/cancel", { params: { path: { id } } })),
    /** Admins only: registers a webhook endpoint (`secret` is shown this once). */
    createWebhook: (webhook: NewWebhook) => authed(() => api.POST("/api/webhooks", { body: webhook })),
    /** Admins only: every webhook endpoint (never their secrets), newest first. */
    webhooks: () => authed(() => api.GET("/api/webhooks")),
    /** Admins only: one webhook endpoint. */
    getWebhook: (id: string) =>
      authed(() => api.GET("/api/webhooks/{id}", { params: { path: { id } } })),
    /** Admins only: removes a webhook endpoint and its undelivered events. */
    deleteWebhook: (id: string) =>
      authed(() => api.DELETE("/api/webhooks/{id}", { params: { path: { id } } })),
    /** Admins only: sends a signed `webhook.test` now and says what the endpoint answered. */
    testWebhook: (id: string) =>
      authed(() => api.POST("/api/webhooks/{id}/test", { params: { path: { id } } })),
    /** Admins only: an endpoint's recent deliveries, newest first, in pages. */
    webhookDeliveries: (
      id: string,
      query: NonNullable<paths["/api/webhooks/{id}/deliveries"]["get"]["parameters"]["query"]> = {},
    ) => authed(() => api.GET("/api/webhooks/{id}/deliveries", { params: { path: { id }, query } })),
    /** Admins (users and admin keys): the audit log of admin and key actions, newest first,
     * in pages; pass `next_cursor` back as `cursor`. */
    audit: (query: NonNullable<paths["/api/audit"]["get"]["parameters"]["query"]> = {}) =>
      authed(() => api.GET("/api/audit", { params: { query } })),
    /** Whether an access token is held. */
    get loggedIn() {
      return accessToken !== undefined;
    },
  };
}

export type Wxbind = ReturnType<typeof createWxbind>;
