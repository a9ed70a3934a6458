// k6 load test stub: doc-ingestion-spike (Phase D). Run: k6 run --summary-export doc-ingestion-spike.json tests/perf/doc-ingestion-spike.js
import http from 'k6/http';
import { check } from 'k6';

export const options = { vus: 5, duration: '30s', thresholds: { http_req_failed: ['rate<0.01'] } };

export default function () {
  const res = http.get(`${__ENV.API_BASE_URL}/health`);
  check(res, { 'status is 200': (r) => r.status === 200 });
}
