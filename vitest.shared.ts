import type { ViteUserConfig } from 'vitest/config';

// Sibling workspaces resolve to their TypeScript sources through the `source` export condition.
const conditions = ['source', 'node', 'development|production'];

/** Shared vitest settings for every workspace. */
export const shared: ViteUserConfig = {
  resolve: { conditions },
  ssr: { resolve: { conditions } },
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    include: ['tests/**/*.test.ts'],
    // The SDK warns once per process that its 2027 releases need Node 22 (see docs/decisions.md);
    // in test output, and in the processes tests start, it is noise.
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  },
};
