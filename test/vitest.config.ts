import { defineConfig } from 'vitest/config';
import { shared } from '../vitest.shared.js';

// End-to-end tests start processes and wait for migrations; they run one file at a time.
export default defineConfig({
  ...shared,
  test: { ...shared.test, include: ['e2e/**/*.test.ts'], fileParallelism: false, testTimeout: 300_000, hookTimeout: 120_000 },
});
