{#
    Incremental silver and gold (see dbt_project/README.md, "Incremental runs").

    Bronze is append-only and every ingestion commit stamps its rows with one `_ingested_at`,
    later than any earlier commit's. So "what is new since the last build" is the bronze rows
    ingested after the newest `ingested_at` a model has already absorbed (its watermark); "late"
    dates are whatever event dates those rows carry, however old, not a fixed lookback window.
#}

{#- `--vars '{replay_to: ...}'` rebuilds bronze as it stood up to a date: always a full build -#}
{% macro full_refresh_on_replay() %}
    {{ return(true if var('replay_to', none) else none) }}
{% endmacro %}


{#- The newest `column` in this model's own table, as a SQL literal; none on a full build. -#}
{% macro own_watermark(column='ingested_at') %}
    {%- if execute and this is not none and is_incremental() -%}
        {%- set found = run_query('select cast(max(' ~ column ~ ') as varchar) from ' ~ this) -%}
        {%- set value = found.columns[0].values()[0] -%}
        {{ return("cast('" ~ (value if value is not none else '-infinity') ~ "' as timestamptz)") }}
    {%- endif -%}
    {{ return(none) }}
{% endmacro %}


{#-
    One row per `key` from the rows in `this` whose key was delivered again plus the deliveries
    ingested after `watermark`: the winner by `order_by` (the same total order the full build's
    dedup uses, so the winner over old and new rows is the winner over all rows), and the
    number of deliveries summed into `count_column`. `drop` lists columns of `this` that the
    staging view does not have (derived in the model's final select).
-#}
{% macro merge_new_deliveries(staging, key, order_by, count_column, watermark, drop=[]) %}
    new_deliveries as (

        select * exclude (kafka_topic), cast(1 as bigint) as {{ count_column }}
        from {{ staging }}
        where ingested_at > {{ watermark }}

    ),

    known as (

        select * {% if drop %}exclude ({{ drop | join(', ') }}){% endif %}
        from {{ this }}
        {#- the new keys' range as constants: DuckDB skips the row groups outside it -#}
        where {{ narrowed_to_new_values(staging, key, 'ingested_at > ' ~ watermark) }}
        and {{ key }} in (select {{ key }} from new_deliveries)

    ),

    candidates as (

        select * from known
        union all by name
        select * from new_deliveries

    ),

    merged as (

        select
            * exclude ({{ count_column }}),
            cast(sum({{ count_column }}) over (partition by {{ key }}) as bigint) as {{ count_column }}

        from candidates

        qualify row_number() over (partition by {{ key }} order by {{ order_by }}) = 1

    )
{% endmacro %}


{#-
    The watermarks of the models built from silver (gold, dim_users): the newest silver
    `ingested_at` each has already absorbed, kept in dbt_state.gold_watermarks by the model's
    post-hook (so a failed build is redone). Returns {'transactions': literal, 'labels':
    literal, 'account_events': literal}, or none on a full build.
-#}
{% macro gold_watermarks() %}
    {%- if not (execute and this is not none and is_incremental()) -%}{{ return(none) }}{%- endif -%}
    {#- by name: a table written before the account_events column lacks it -#}
    {%- set found = run_query(
        "select columns(*)::varchar from dbt_state.gold_watermarks "
        ~ "where model = '" ~ this.identifier ~ "'"
    ) if gold_state_exists() else none -%}
    {%- set row = found.rows[0] if found and found.rows | length > 0 else none -%}
    {%- set literals = {} -%}
    {%- for source in ['transactions', 'labels', 'account_events'] -%}
        {%- set column = source ~ '_ingested_at' -%}
        {%- set value = row[column] if row is not none and column in found.column_names else none -%}
        {%- do literals.update({source: "cast('" ~ (value if value is not none else '-infinity') ~ "' as timestamptz)"}) -%}
    {%- endfor -%}
    {{ return(literals) }}
{% endmacro %}


{% macro gold_state_exists() %}
    {%- set found = run_query(
        "select count(*) from duckdb_tables() "
        ~ "where schema_name = 'dbt_state' and table_name = 'gold_watermarks'"
    ) -%}
    {{ return(found.columns[0].values()[0] > 0) }}
{% endmacro %}


{#- post-hook of a model built from silver: record the silver it has just absorbed -#}
{% macro record_gold_watermark(transactions, labels, account_events=none) %}
    create schema if not exists dbt_state;
    create table if not exists dbt_state.gold_watermarks (
        model varchar primary key,
        transactions_ingested_at timestamptz,
        labels_ingested_at timestamptz
    );
    alter table dbt_state.gold_watermarks add column if not exists account_events_ingested_at timestamptz;
    insert or replace into dbt_state.gold_watermarks
        (model, transactions_ingested_at, labels_ingested_at, account_events_ingested_at)
    select
        '{{ this.identifier }}',
        (select max(ingested_at) from {{ transactions }}),
        {% if labels is not none %}(select max(ingested_at) from {{ labels }}){% else %}null{% endif %},
        {% if account_events is not none %}(select max(ingested_at) from {{ account_events }}){% else %}null{% endif %};
{% endmacro %}


{#- fct_merchant_fraud_labels: the ids whose label or transaction silver absorbed since `since` -#}
{% macro touched_fraud_label_ids(since) %}
    touched as (

        select transaction_id from {{ ref('fct_labels') }}
        where ingested_at > {{ since.labels }}

        union

        select transaction_id from {{ ref('fct_transactions') }}
        where ingested_at > {{ since.transactions }}

    )
{% endmacro %}


{#- pre-hook of fct_merchant_fraud_labels: delete the touched ids' rows (rebuilt by the model) -#}
{% macro delete_touched_fraud_labels() %}
    {%- set since = gold_watermarks() -%}
    {%- if since is not none -%}
        delete from {{ this }} where transaction_id in (
            with {{ touched_fraud_label_ids(since) }} select transaction_id from touched
        )
    {%- endif -%}
{% endmacro %}
